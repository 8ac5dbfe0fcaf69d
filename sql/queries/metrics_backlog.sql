-- metrics_backlog: what `/metrics` reads at scrape time. No parameters. One row:
-- versions post-publication, processing and errored; age in seconds of the oldest
-- post-publication version (0 when none); outbox events pending (undelivered, not parked)
-- and parked; age in seconds of the oldest pending event (0 when none).
-- Each count reads a partial index (versions_pending, versions_one_processing,
-- versions_errored, outbox_undelivered), so a scrape costs what is in flight, not the
-- size of the history.
select (select count(*) from postpub.versions where state = 'post-publication'),
       (select count(*) from postpub.versions where state = 'processing'),
       (select count(*) from postpub.versions where state = 'errored'),
       coalesce((select extract(epoch from now() - min(created_at))
                   from postpub.versions where state = 'post-publication'), 0)::float8,
       (select count(*) from postpub.outbox where delivered_at is null and parked_at is null),
       (select count(*) from postpub.outbox where delivered_at is null and parked_at is not null),
       coalesce((select extract(epoch from now() - min(created_at))
                   from postpub.outbox where delivered_at is null and parked_at is null), 0)::float8
