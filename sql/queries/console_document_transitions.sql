-- console_document_transitions: the state changes of versions $1 (ids), newest first (at
-- most 1000; rows read off the version row have no id, so by time). Rows: version id,
-- from ('' = created), to, at, by, why ('' none).
select t.version_id, coalesce(t.from_state::text, ''), t.to_state::text,
       to_char(t.at, 'YYYY-MM-DD HH24:MI:SS.MS'), t.by, coalesce(t.why, '')
  from postpub.transitions t
 where t.version_id = any($1::bigint[])
 order by t.at desc, t.id desc nulls first
 limit 1000
