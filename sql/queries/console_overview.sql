-- console_overview: the overview's exact figures, each read from a partial index so the
-- page costs what is in flight, not the size of the history. No parameters. One row:
-- post-publication versions (counted up to 10001: the page says "more than 10,000"),
-- processing versions, errored versions (up to 10001), seconds the longest-waiting due
-- pending version has waited (0 when none), and the planner's estimate of all versions.
select (select count(*) from (select 1 from postpub.versions
                               where state = 'post-publication' limit 10001) p),
       (select count(*) from postpub.versions where state = 'processing'),
       (select count(*) from (select 1 from postpub.versions
                               where state = 'errored' limit 10001) e),
       coalesce((select extract(epoch from now() - v.created_at)
                   from postpub.versions v
                  where v.state = 'post-publication'
                  order by v.run_after, v.id
                  limit 1), 0)::float8,
       greatest((select c.reltuples from pg_class c
                  where c.oid = 'postpub.versions'::regclass), 0)::bigint
