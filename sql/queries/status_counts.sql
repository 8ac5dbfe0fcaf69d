-- status_counts: versions per state, with the age in seconds of the oldest pending one
-- (null for other states).
select state::text as state,
       count(*) as versions,
       extract(epoch from now() - min(created_at) filter (where state = 'post-publication'))::float8
         as oldest_pending_s
  from postpub.versions
 group by state
