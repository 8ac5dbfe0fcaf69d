-- 0005_outbox: what the relay needs to deliver outbox events (issue 5): delivery tracked
-- per (event, sink), the claim of deliverable events in per-document order, recording
-- outcomes, parking and requeueing, and retention.
--
-- Ordering rule: an event is deliverable only while every earlier event of its document is
-- delivered, i.e. acknowledged by every configured sink (`outbox.delivered_at` set). A
-- parked event, or one waiting for its retry, therefore holds back the later events of its
-- document, and of no other document.
--
-- Locking protocol (why two relays never send the same event at the same time and never
-- reorder a document):
--   * A relay claims in its own transaction: it locks the *head* of each document (the
--     oldest undelivered event) FOR UPDATE SKIP LOCKED, then the events that follow it in
--     the same document. Only the holder of a document's head ever locks that document's
--     later events, so the second lock never waits for anyone.
--   * It sends while holding the locks, records the outcomes and commits. A relay that dies
--     before the commit releases its locks with its connection and records nothing: the
--     events are sent again (same event id, so JetStream drops them within its duplicate
--     window and webhook receivers see the same Idempotency-Key).
--   * Whatever another relay committed before a head was locked is re-checked on the
--     locked row (READ COMMITTED re-evaluates `delivered_at is null`), so a head delivered
--     meanwhile is never sent twice.

-- Per-(event, sink) state. A row appears with the first attempt to deliver the event to
-- that sink; the event's own row summarises them (delivered when every configured sink is).
create table postpub.outbox_deliveries (
  outbox_id       bigint not null references postpub.outbox (id) on delete cascade,
  sink            text not null,      -- the sink's configured name
  delivered_at    timestamptz,        -- the sink acknowledged the event
  attempts        int not null default 0,
  last_error      text,
  next_attempt_at timestamptz not null default now(),
  parked_at       timestamptz,        -- the sink refused it permanently
  primary key (outbox_id, sink)
);

-- _relay_claim(sinks, limit, with_body): lock up to `limit` deliverable events: the due
-- heads of the documents, oldest first, and after each head the events of its document
-- that follow without a gap (spread evenly over the documents). Returns them with the
-- state of each configured sink, and the version's content when `with_body`.
create function postpub._relay_claim(p_sinks text[], p_limit int, p_with_body boolean)
returns table (id bigint, event_id uuid, document text, kind text, payload jsonb, body text,
               d_sinks text[], d_delivered boolean[], d_due boolean[], d_attempts int[])
language plpgsql
-- Plan each statement for the tables as they are now: a generic plan cached while the
-- outbox was small (or never analyzed) turns into sequential scans once it is large.
set plan_cache_mode = force_custom_plan
as $$
declare
  v_heads bigint[];
  v_per int;
  v_ids bigint[];
begin
  -- The head of every document with undelivered events, one probe of outbox_undelivered
  -- per document (a loose index scan), whatever the backlog.
  with recursive heads (document, id) as (
    (select o.document, o.id from postpub.outbox o
      where o.delivered_at is null
      order by o.document, o.id
      limit 1)
    union all
    select n.document, n.id
      from heads h
      cross join lateral (
        select o.document, o.id from postpub.outbox o
         where o.delivered_at is null and o.document > h.document
         order by o.document, o.id
         limit 1) n
  )
  select coalesce(array_agg(h.id), '{}') into v_heads from heads h;

  -- Lock the due ones, oldest first; heads another relay holds are skipped. (A separate
  -- statement looking rows up by id: its plan does not depend on fresh statistics.)
  select coalesce(array_agg(l.id), '{}') into v_heads
    from (
      select o.id
        from postpub.outbox o
       where o.id = any(v_heads)
         and o.delivered_at is null and o.parked_at is null and o.next_attempt_at <= now()
       order by o.id
       limit p_limit
         for update of o skip locked
    ) l;
  if cardinality(v_heads) = 0 then
    return;
  end if;

  -- Each head's run: the undelivered events after it, up to the first parked or not yet
  -- due one. Heads come first (pos 1), so every locked head stays in the batch.
  v_per := greatest(1, ceil(p_limit::numeric / cardinality(v_heads))::int);
  select coalesce(array_agg(r.id), '{}') into v_ids
    from (
      select s.id
        from unnest(v_heads) as hd(id)
        join postpub.outbox h on h.id = hd.id
        cross join lateral (
          select w.id, w.pos
            from (select x.id,
                         row_number() over (order by x.id) as pos,
                         bool_and(x.parked_at is null and x.next_attempt_at <= now())
                           over (order by x.id) as ok
                    from (select o.id, o.parked_at, o.next_attempt_at
                            from postpub.outbox o
                           where o.document = h.document and o.delivered_at is null
                             and o.id >= h.id
                           order by o.id
                           limit v_per) x) w
           where w.ok) s
       order by s.pos, s.id
       limit p_limit
    ) r;

  -- Only the holder of a head locks the rest of its document (see the protocol above), so
  -- this waits for nobody; rows come in id order like every other outbox lock.
  perform 1 from postpub.outbox o
    where o.id = any(v_ids) and not (o.id = any(v_heads))
    order by o.id
      for update;

  return query
  select o.id, o.event_id, o.document, o.kind::text, o.payload,
         case when p_with_body and o.kind = 'published' then
           (select coalesce(c.content, v.body)
              from postpub.versions v
              left join postpub.collated c on c.version_id = v.id
             where v.id = o.version_id)
         end,
         coalesce(d.sinks, '{}'), coalesce(d.delivered, '{}'), coalesce(d.due, '{}'),
         coalesce(d.attempts, '{}')
    from postpub.outbox o
    left join lateral (
      select array_agg(x.sink order by x.sink) as sinks,
             array_agg(x.delivered_at is not null order by x.sink) as delivered,
             array_agg(x.parked_at is null and x.next_attempt_at <= now() order by x.sink) as due,
             array_agg(x.attempts order by x.sink) as attempts
        from postpub.outbox_deliveries x
       where x.outbox_id = o.id and x.sink = any(p_sinks)) d on true
   where o.id = any(v_ids)
   order by o.document, o.id;
end $$;

-- _relay_record(sinks, ids, sink, outcomes, errors, retry_s): the outcome of each attempt
-- (one array element per (event, sink) tried): 'delivered', 'retry' (after retry_s
-- seconds) or 'park' (refused permanently, with the reason); or 'settled' (sink ignored)
-- for an event no configured sink still owed (sinks were removed from the configuration).
-- Then each event is delivered when every configured sink (`sinks`) has acknowledged it,
-- parked when one of them parked it, and otherwise due again when its earliest pending
-- sink is.
-- Returns (id, delivered, parked) per event.
create function postpub._relay_record(p_sinks text[], p_ids bigint[], p_sink text[],
                                      p_outcomes text[], p_errors text[],
                                      p_retry_s double precision[])
returns table (id bigint, delivered boolean, parked boolean)
language plpgsql
set plan_cache_mode = force_custom_plan  -- see _relay_claim
as $$
begin
  insert into postpub.outbox_deliveries as d
         (outbox_id, sink, delivered_at, attempts, last_error, next_attempt_at, parked_at)
  select t.id, t.sink,
         case when t.outcome = 'delivered' then now() end,
         1,
         t.error,
         -- From now, not from the transaction's start: sending may have taken a while.
         clock_timestamp() + make_interval(secs => coalesce(t.retry_s, 0)),
         case when t.outcome = 'park' then now() end
    from unnest(p_ids, p_sink, p_outcomes, p_errors, p_retry_s)
         as t(id, sink, outcome, error, retry_s)
   where t.outcome <> 'settled'
  on conflict (outbox_id, sink) do update
     set delivered_at = excluded.delivered_at,
         attempts = d.attempts + 1,
         last_error = coalesce(excluded.last_error, d.last_error),
         next_attempt_at = excluded.next_attempt_at,
         parked_at = excluded.parked_at;

  -- A new statement: it sees the rows written above.
  return query
  with agg as (
    select x.outbox_id as id,
           count(*) filter (where x.delivered_at is not null) = cardinality(p_sinks)
             as all_done,
           bool_or(x.delivered_at is null and x.parked_at is not null) as any_parked,
           min(x.next_attempt_at) filter (where x.delivered_at is null and x.parked_at is null)
             as next_at
      from postpub.outbox_deliveries x
     where x.outbox_id = any(p_ids) and x.sink = any(p_sinks)
     group by x.outbox_id
  ), err as (
    select t.id, string_agg(format('sink %s: %s', t.sink, t.error), '; ' order by t.sink) as msg
      from unnest(p_ids, p_sink, p_outcomes, p_errors) as t(id, sink, outcome, error)
     where t.outcome in ('retry', 'park')
     group by t.id
  ), u as (
    update postpub.outbox o
       set delivered_at = case when a.all_done then now() end,
           attempts = o.attempts + 1,
           last_error = coalesce(e.msg, o.last_error),
           next_attempt_at = coalesce(a.next_at, now()),
           parked_at = case when a.any_parked and not a.all_done then now() end
      from agg a
      left join err e on e.id = a.id
     where o.id = a.id and o.delivered_at is null
    returning o.id, o.delivered_at is not null as delivered, o.parked_at is not null as parked
  )
  select u.id, u.delivered, u.parked from u;
end $$;

-- _relay_purge(retention, limit): delete up to `limit` events delivered (to every sink)
-- longer than `retention` ago; their per-sink rows go with them. Returns how many.
create function postpub._relay_purge(p_retention interval, p_limit int) returns int
language sql as $$
  with old as (
    select o.id
      from postpub.outbox o
     where o.delivered_at is not null and o.delivered_at < now() - p_retention
     order by o.delivered_at
     limit p_limit
       for update skip locked
  ), gone as (
    delete from postpub.outbox o using old where o.id = old.id returning 1
  )
  select count(*)::int from gone;
$$;

-- requeue_event(event_id): a parked event (a sink refused it permanently) back to the relay,
-- attempts reset, for every sink that refused it. Anything else is refused: an event that
-- is delivered or still being delivered needs no requeue.
create function postpub.requeue_event(event_id uuid) returns uuid
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_event uuid := requeue_event.event_id;
  v_id bigint;
  v_doc text;
  v_delivered timestamptz;
  v_parked timestamptz;
begin
  select o.id, o.document, o.delivered_at, o.parked_at
    into v_id, v_doc, v_delivered, v_parked
    from postpub.outbox o where o.event_id = v_event for update;
  if not found then
    raise exception 'postpub.requeue_event: outbox event % does not exist', v_event
      using errcode = 'P0002';
  end if;
  if v_delivered is not null then
    raise exception 'postpub.requeue_event: event % of document "%" was delivered at %; only parked events can be requeued',
      v_event, v_doc, v_delivered using errcode = '55000';
  end if;
  if v_parked is null then
    raise exception 'postpub.requeue_event: event % of document "%" is not parked (it is waiting for delivery or a retry); only parked events can be requeued',
      v_event, v_doc using errcode = '55000';
  end if;
  update postpub.outbox_deliveries x
     set parked_at = null, attempts = 0, next_attempt_at = now()
   where x.outbox_id = v_id and x.parked_at is not null;
  update postpub.outbox o
     set parked_at = null, attempts = 0, next_attempt_at = now()
   where o.id = v_id;
  perform pg_notify('postpub', 'outbox');
  return v_event;
end $$;
