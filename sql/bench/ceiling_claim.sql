-- ceiling_claim: the writes of a claim as plain SQL, no per-document lock protocol:
-- up to $1 due queue entries to processing for actor $2 (the version row, the queue row,
-- the document's processing pointer, the claim's row); the version row is its own audit
-- row (claimed_at).
with c as (
  select q.version_id as id
    from postpub.queue q
   where q.run_after <= now()
   order by q.run_after, q.version_id
   limit $1::int
     for update skip locked
), u as (
  update postpub.versions v
     set state = 'processing', attempts = v.attempts + 1, locked_by = $2::text,
         locked_until = now() + interval '30 seconds', lease_token = txid_current(),
         state_changed_at = now(), claimed_at = now(), claimed_by = $2::text
    from c
   where v.id = c.id
  returning v.id, v.document, v.version, v.attempts, v.lease_token
), dq as (
  delete from postpub.queue q using c where q.version_id = c.id
), dp as (
  update postpub.documents d
     set processing_id = u.id, processing_version = u.version
    from u
   where d.document = u.document
), cr as (
  insert into postpub.claims (token, actor, locked_until, version_ids)
  select txid_current(), $2::text, now() + interval '30 seconds', array_agg(u.id) from u
  having count(*) > 0
)
select u.id, u.lease_token from u
