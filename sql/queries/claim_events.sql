-- claim_events: lock up to $2 deliverable outbox events for the sinks named $1 (per-document
-- order; see postpub._relay_claim in 0005_outbox.sql), with the version's content when $3.
-- Returns (id, event_id, document, kind, payload, body, d_sinks, d_delivered, d_due,
-- d_attempts): the d_* arrays describe the configured sinks already tried.
select id, event_id, document, kind, payload, body, d_sinks, d_delivered, d_due, d_attempts
  from postpub._relay_claim($1::text[], $2::int, $3::boolean)
