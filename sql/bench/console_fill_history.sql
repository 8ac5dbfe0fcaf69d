-- console_fill_history: for the versions with ids above $1, the transition that settled
-- each, and an outbox event for each current one (delivered; parked in every 1000th
-- document), as the pipeline would have written them.
with t as (
  insert into postpub.transition_log (version_id, document, from_state, to_state, by, why)
  select v.id, v.document, 'processing', v.state, 'bench', 'bench fill'
    from postpub.versions v
   where v.id > $1::bigint
)
insert into postpub.outbox (event_id, document, version_id, kind, payload, delivered_at,
                            parked_at, attempts, last_error)
select gen_random_uuid(), v.document, v.id, 'published', '{}'::jsonb,
       case when right(v.document, 3) <> '000' then now() end,
       case when right(v.document, 3) = '000' then now() end,
       1,
       case when right(v.document, 3) = '000' then 'sink hook: refused (422)' end
  from postpub.versions v
 where v.id > $1::bigint and v.state = 'current'
