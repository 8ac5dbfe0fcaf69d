-- ceiling_claim: the writes of a claim as plain SQL, no per-document lock protocol:
-- up to $1 pending versions to processing for actor $2, with their audit rows.
with c as (
  select v.id
    from postpub.versions v
   where v.state = 'post-publication' and v.run_after <= now()
   order by v.run_after, v.id
   limit $1::int
     for update skip locked
), u as (
  update postpub.versions v
     set state = 'processing', attempts = v.attempts + 1, locked_by = $2::text,
         locked_until = now() + interval '30 seconds', lease_token = txid_current(),
         state_changed_at = now()
    from c
   where v.id = c.id
  returning v.id, v.document, v.attempts
), t as (
  insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
  select u.id, u.document, 'post-publication', 'processing', $2::text, 'claimed, attempt ' || u.attempts
    from u
)
select u.id from u
