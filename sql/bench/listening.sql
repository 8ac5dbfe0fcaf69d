-- listening: sessions of this database that run LISTEN (the benchmarked daemon is up).
select count(*) as sessions
  from pg_stat_activity
 where datname = current_database() and query ilike 'listen%'
