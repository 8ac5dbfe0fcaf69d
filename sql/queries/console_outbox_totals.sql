-- console_outbox_totals: undelivered outbox events. No parameters. One row: events pending
-- (not parked), events parked, seconds since the oldest pending one was written (0: none).
select count(*) filter (where parked_at is null),
       count(*) filter (where parked_at is not null),
       coalesce(extract(epoch from now() - min(created_at) filter (where parked_at is null)),
                0)::float8
  from postpub.outbox
 where delivered_at is null
