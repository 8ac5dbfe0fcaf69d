-- console_state_estimates: versions per state as the planner estimates them (ANALYZE's
-- most common values times the table's estimated rows): counting the current, archived and
-- superseded versions exactly would read the whole table. No parameters. Rows: state,
-- estimated count. Empty until the table has been analyzed.
select s.state, (s.freq * greatest(c.reltuples, 0))::bigint
  from pg_stats st
  join pg_class c on c.oid = 'postpub.versions'::regclass
 cross join lateral unnest(st.most_common_vals::text::text[], st.most_common_freqs)
         as s(state, freq)
 where st.schemaname = 'postpub' and st.tablename = 'versions' and st.attname = 'state'
