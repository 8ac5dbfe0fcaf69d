-- metrics_backlog: what `/metrics` reads at scrape time. No parameters. One row:
-- versions post-publication, processing and errored; age in seconds of the oldest
-- post-publication version (0 when none); outbox events pending (undelivered, not parked)
-- and parked; age in seconds of the oldest pending event (0 when none).
-- Each count reads a narrow table or a partial index (postpub.queue, postpub.claims,
-- versions_with_error, outbox_undelivered), so a scrape costs what is in flight, not the
-- size of the history. The oldest pending version is the queue's lowest id.
select (select count(*) from postpub.queue),
       (select count(*) from postpub.claimed),
       (select count(*) from postpub.versions where last_error is not null and state = 'errored'),
       coalesce((select extract(epoch from now() - v.created_at)
                   from postpub.versions v
                  where v.id = (select min(q.version_id) from postpub.queue q)), 0)::float8,
       (select count(*) from postpub.outbox where delivered_at is null and parked_at is null),
       (select count(*) from postpub.outbox where delivered_at is null and parked_at is not null),
       coalesce((select extract(epoch from now() - min(created_at))
                   from postpub.outbox where delivered_at is null and parked_at is null), 0)::float8
