-- versions: every version with its outcome and the events it wrote, for the demo's table.
select v.document, v.version, v.state::text as state, v.is_tombstone, v.attempts,
       coalesce(v.last_error, '') as note,
       (select string_agg(o.kind::text, ',') from postpub.outbox o where o.version_id = v.id)
         as events
  from postpub.versions v
 order by v.document, v.version
