-- console_document_versions: every version of document $1 (the newest 500), newest first.
-- Rows: id, version, state, attempts, last error ('' none), tombstone, created, state
-- changed, lease holder ('' none), body bytes, has collated output.
select v.id, v.version, v.state::text, v.attempts, coalesce(v.last_error, ''), v.is_tombstone,
       to_char(v.created_at, 'YYYY-MM-DD HH24:MI:SS'),
       to_char(v.state_changed_at, 'YYYY-MM-DD HH24:MI:SS'),
       coalesce(v.locked_by, ''), octet_length(v.body)::bigint,
       exists (select 1 from postpub.collated c where c.version_id = v.id)
  from postpub.versions v
 where v.document = $1::text
 order by v.version desc
 limit 500
