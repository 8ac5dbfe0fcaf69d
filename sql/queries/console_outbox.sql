-- console_outbox: the outbox backlog per sink, from the undelivered events only (the
-- outbox_undelivered index). No parameters. Rows: sink, deliveries waiting for a retry,
-- deliveries parked. A sink that has not been tried for an event has no row yet; the
-- undelivered total is console_outbox_totals.
select d.sink,
       count(*) filter (where d.delivered_at is null and d.parked_at is null),
       count(*) filter (where d.delivered_at is null and d.parked_at is not null)
  from postpub.outbox o
  join postpub.outbox_deliveries d on d.outbox_id = o.id
 where o.delivered_at is null
 group by d.sink
 order by d.sink
