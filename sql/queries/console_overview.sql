-- console_overview: the overview's exact figures, each read from a narrow table or a
-- partial index so the page costs what is in flight, not the size of the history. No
-- parameters. One row: post-publication versions (counted up to 10001: the page says "more
-- than 10,000"), processing versions, errored versions (up to 10001), seconds the
-- longest-waiting due pending version has waited (0 when none), and the planner's estimate
-- of all versions.
select (select count(*) from (select 1 from postpub.queue limit 10001) p),
       (select count(*) from postpub.claimed),
       (select count(*) from (select 1 from postpub.versions
                               where last_error is not null and state = 'errored'
                               limit 10001) e),
       coalesce((select extract(epoch from now() - v.created_at)
                   from postpub.queue q
                   join postpub.versions v on v.id = q.version_id
                  order by q.run_after, q.version_id
                  limit 1), 0)::float8,
       greatest((select c.reltuples from pg_class c
                  where c.oid = 'postpub.versions'::regclass), 0)::bigint
