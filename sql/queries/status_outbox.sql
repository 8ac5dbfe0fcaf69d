-- status_outbox: undelivered and parked outbox events, with the oldest undelivered age; then
-- the undelivered events that already failed at least once (waiting for a retry) and the
-- delivered events kept until outbox.retention.
select count(*) filter (where delivered_at is null and parked_at is null) as undelivered,
       count(*) filter (where parked_at is not null and delivered_at is null) as parked,
       coalesce(extract(epoch from now() - min(created_at) filter (where delivered_at is null)), 0)::float8
         as oldest_s,
       count(*) filter (where delivered_at is null and parked_at is null and attempts > 0)
         as retrying,
       count(*) filter (where delivered_at is not null) as delivered
  from postpub.outbox
