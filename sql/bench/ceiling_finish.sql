-- ceiling_finish: the writes of publishing versions $1 (claimed with tokens $3) as plain
-- SQL: archive the previous current (none in the drain), make them current, move the
-- pointers, drop the claims' rows, the outbox event and the archive's audit row (a publish
-- is its own: published_by).
with pub as (
  select v.id, v.version, d.current_id, d.current_version
    from postpub.versions v
    join postpub.documents d on d.document = v.document
   where v.id = any($1::bigint[])
), a as (
  update postpub.versions c
     set state = 'archived', state_changed_at = now()
    from pub
   where c.id = pub.current_id and pub.current_version < pub.version
  returning c.id, c.document
), u as (
  update postpub.versions v
     set state = 'current', published_at = now(), published_by = $2::text, state_changed_at = now(),
         locked_by = null, locked_until = null, lease_token = null
   where v.id = any($1::bigint[]) and v.state = 'processing'
  returning v.id, v.document, v.version, v.published_at
), dp as (
  update postpub.documents d
     set current_id = u.id, current_version = u.version, processing_id = null,
         processing_version = null
    from u
   where d.document = u.document
), dl as (
  delete from postpub.claims c where c.token = any($3::bigint[])
), e as (
  insert into postpub.outbox (event_id, document, version_id, kind, payload)
  select x.event_id, x.document, x.id, 'published',
         jsonb_build_object('event_id', x.event_id, 'kind', 'published', 'document', x.document,
                            'version', x.version, 'version_id', x.id, 'published_at', x.published_at)
    from (select postpub._event_id() as event_id, u.* from u) x
), t as (
  insert into postpub.transition_log (version_id, document, from_state, to_state, by, why)
  select a.id, a.document, 'current'::postpub.state, 'archived'::postpub.state, $2::text,
         'replaced'
    from a
)
select count(*) from u
