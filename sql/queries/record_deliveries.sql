-- record_deliveries: the outcome of each (event, sink) attempt, in the claiming transaction.
-- $1 configured sink names, $2 outbox ids, $3 sink names, $4 outcomes ('delivered' | 'retry'
-- | 'park'), $5 errors, $6 retry delays in seconds. Returns (id, delivered, parked) per event.
select id, delivered, parked
  from postpub._relay_record($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                             $6::float8[])
