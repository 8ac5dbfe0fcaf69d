-- console_document_events: the outbox events of document $1 (the newest 100) with one row
-- per sink that was tried (sink '' when none was yet). Rows: event id, kind, version id,
-- written, delivered ('' not yet), parked ('' no), rounds, last error, sink, sink delivered
-- ('' not yet), sink parked ('' no), sink attempts, sink error.
select o.event_id, o.kind::text, o.version_id,
       to_char(o.created_at, 'YYYY-MM-DD HH24:MI:SS'),
       coalesce(to_char(o.delivered_at, 'YYYY-MM-DD HH24:MI:SS'), ''),
       coalesce(to_char(o.parked_at, 'YYYY-MM-DD HH24:MI:SS'), ''),
       o.attempts, coalesce(o.last_error, ''),
       coalesce(d.sink, ''),
       coalesce(to_char(d.delivered_at, 'YYYY-MM-DD HH24:MI:SS'), ''),
       coalesce(to_char(d.parked_at, 'YYYY-MM-DD HH24:MI:SS'), ''),
       coalesce(d.attempts, 0), coalesce(d.last_error, '')
  -- The newest 100 undelivered and the newest 100 delivered, each from its partial index
  -- (outbox_undelivered, outbox_delivered_document), then the newest 100 of both.
  from (select * from (
          (select * from postpub.outbox
            where document = $1::text and delivered_at is null order by id desc limit 100)
          union all
          (select * from postpub.outbox
            where document = $1::text and delivered_at is not null order by id desc limit 100)
        ) b order by id desc limit 100) o
  left join postpub.outbox_deliveries d on d.outbox_id = o.id
 order by o.id desc, d.sink
