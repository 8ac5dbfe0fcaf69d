-- status_outbox: undelivered and parked outbox events, with the oldest undelivered age.
select count(*) filter (where delivered_at is null and parked_at is null),
       count(*) filter (where parked_at is not null and delivered_at is null),
       coalesce(extract(epoch from now() - min(created_at) filter (where delivered_at is null)), 0)::float8
  from postpub.outbox
