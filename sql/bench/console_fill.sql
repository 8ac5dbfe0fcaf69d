-- console_fill: documents doc-<$1 + 1> … doc-<$1 + $2>, each with $3 versions already
-- settled (the last current, the earlier ones archived; in every 100th document the one
-- before last errored with a validate reason instead), a minute apart. The console bench
-- fills the tables this way instead of running the pipeline a million times.
with d as (
  insert into postpub.documents (document, last_version)
  select format('doc-%s', lpad(i::text, 7, '0')), $3::int
    from generate_series($1::int + 1, $1::int + $2::int) i
  returning document
)
insert into postpub.versions (document, version, body, state, attempts, last_error,
                              created_at, state_changed_at, published_at)
select d.document, v,
       format('<div><h1>%s</h1><p>version %s of the text</p><p>unchanged paragraph</p></div>',
              d.document, v),
       s.state, 1,
       case when s.state = 'errored'
            then 'step validate: malformed HTML at line 1: </div> closes <p> opened at line 1' end,
       now() - make_interval(mins => $3::int - v), now() - make_interval(mins => $3::int - v),
       case when s.state <> 'errored' then now() - make_interval(mins => $3::int - v) end
  from d
 cross join generate_series(1, $3::int) v
 cross join lateral (
   select (case when v = $3::int then 'current'
                when v = $3::int - 1 and right(d.document, 2) = '00' then 'errored'
                else 'archived' end)::postpub.state as state) s
 order by v, d.document
