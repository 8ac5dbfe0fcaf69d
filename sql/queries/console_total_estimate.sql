-- console_total_estimate: the planner's estimate of all versions (pg_class.reltuples; 0
-- before the first ANALYZE or VACUUM). No parameters.
select greatest(c.reltuples, 0)::bigint
  from pg_class c
 where c.oid = 'postpub.versions'::regclass
