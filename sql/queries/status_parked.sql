-- status_parked: the $1 most recently parked outbox events with their reasons.
select event_id, document, kind::text as kind, attempts, coalesce(last_error, '') as last_error,
       parked_at::text as at
  from postpub.outbox
 where parked_at is not null and delivered_at is null
 order by parked_at desc, id desc
 limit $1
