-- console_daemons: the daemons alive, as the database sees them. No parameters. Rows:
-- 'lease' rows (daemon actor, versions it holds, seconds until its earliest lease
-- expires) from the claims of processing versions, then 'conn' rows (client address, connections,
-- seconds since the oldest connected) of sessions named "postpub" in this database.
select 'lease', h.locked_by, count(*),
       extract(epoch from min(h.locked_until) - now())::float8
  from postpub.claimed h
 group by h.locked_by
union all
select 'conn', coalesce(host(a.client_addr), 'local socket'), count(*),
       extract(epoch from now() - min(a.backend_start))::float8
  from pg_stat_activity a
 where a.datname = current_database() and a.application_name = 'postpub'
 group by 2
 order by 1 desc, 2
