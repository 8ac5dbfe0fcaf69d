-- ceiling_finish: the writes of publishing versions $1 as plain SQL: archive the previous
-- current (none in the drain), make them current, outbox event and audit rows.
with prev as (
  select p.id
    from postpub.versions v
    cross join lateral (
      select c.id from postpub.versions c
       where c.document = v.document and c.state = 'current' and c.version < v.version
      offset 0) p
   where v.id = any($1::bigint[])
), a as (
  update postpub.versions c
     set state = 'archived', state_changed_at = now()
    from prev
   where c.id = prev.id
  returning c.id, c.document
), u as (
  update postpub.versions v
     set state = 'current', published_at = now(), state_changed_at = now(),
         locked_by = null, locked_until = null, lease_token = null
   where v.id = any($1::bigint[]) and v.state = 'processing'
  returning v.id, v.document, v.version, v.published_at
), e as (
  insert into postpub.outbox (event_id, document, version_id, kind, payload)
  select x.event_id, x.document, x.id, 'published',
         jsonb_build_object('event_id', x.event_id, 'kind', 'published', 'document', x.document,
                            'version', x.version, 'version_id', x.id, 'published_at', x.published_at)
    from (select postpub._event_id() as event_id, u.* from u) x
), t as (
  insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
  select u.id, u.document, 'processing'::postpub.state, 'current'::postpub.state, $2::text,
         'published'
    from u
  union all
  select a.id, a.document, 'current'::postpub.state, 'archived'::postpub.state, $2::text,
         'replaced'
    from a
)
select count(*) from u
