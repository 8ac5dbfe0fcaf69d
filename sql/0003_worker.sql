-- 0003_worker: the statements the daemon runs on its hot path, as functions so that each
-- step of a claim or a finish sees the effects of the locks taken before it.
--
-- Locking protocol (why there is no deadlock and no double processing):
--   * The documents row is the per-document lock. publish()/delete() hold it until the
--     application commits; the daemon only ever takes it with SKIP LOCKED, so it never
--     waits for an application and never deadlocks with one.
--   * A claim or finish first locks documents, then, in a new statement (a new snapshot
--     under READ COMMITTED), reads and writes that document's versions. Whatever another
--     daemon committed for the document before the lock was granted is therefore visible.
--   * Finishing is fenced: a version changes state only while it is still 'processing'
--     with the caller's lease token, so a worker whose lease expired cannot overwrite it.

-- Planner settings of the functions below: their statements touch a few hundred rows of
-- tables that may hold millions, often right after a bulk publish, before autovacuum has
-- analyzed them. With stale statistics the planner can pick a bitmap scan and sort of the
-- whole backlog (hundreds of ms per claim, measured). Index scans are always right for
-- these access paths (by id, by document, or the pending index in order), so the
-- functions turn the alternatives off, and join per document through LATERAL lookups
-- or id arrays rather than through CTE joins whose sizes the planner cannot know. JIT is
-- off: with inflated estimates it compiles a 5 ms statement for 300 ms.

-- _claim(actor, limit, lease, token): claim up to `limit` versions, one per document, the newest
-- pending one; older pending versions of those documents become superseded.
create function postpub._claim(p_actor text, p_limit int, p_lease interval,
                               p_token bigint default null)
returns table (version_id bigint, document text, version int, is_tombstone boolean,
               recipe_id bigint, attempts int, lease_token bigint, body_bytes int,
               created_at timestamptz)
language plpgsql
set enable_seqscan = off set enable_bitmapscan = off set jit = off as $$
declare
  v_docs text[];
  v_claim bigint[];
  v_stale bigint[];
  v_by int[];
begin
  -- 1. Documents with claimable work, oldest first, that no other transaction holds.
  select coalesce(array_agg(distinct x.document), '{}') into v_docs
    from (select d.document
            from postpub.versions v
            join postpub.documents d on d.document = v.document
           where v.state = 'post-publication' and v.run_after <= now()
             and not exists (select 1 from postpub.versions p
                              where p.document = v.document and p.state = 'processing'
                             offset 0)  -- a probe per row, never a scan of all processing
           order by v.run_after, v.id
           limit p_limit
             for no key update of d skip locked) x;
  if cardinality(v_docs) = 0 then
    return;
  end if;

  -- 2. Per locked document (a new snapshot: every claim or finish committed before the
  --    lock was granted is visible): the newest pending version is claimed unless the
  --    document is busy or already has a newer current; older pending ones are stale.
  select coalesce(array_agg(i.ids[1]) filter (
           where i.run_after <= now() and i.processing is null
             and i.versions[1] > coalesce(i.current, 0)), '{}'),
         coalesce(array_agg(s.id) filter (where s.id is not null), '{}'),
         coalesce(array_agg(greatest(i.versions[1], i.current, i.processing))
                    filter (where s.id is not null), '{}')
    into v_claim, v_stale, v_by
    from (select n.ids, n.versions, n.run_after,
                 (select c.version from postpub.versions c
                   where c.document = x.document and c.state = 'current') as current,
                 (select p.version from postpub.versions p
                   where p.document = x.document and p.state = 'processing') as processing
            from unnest(v_docs) as x(document)
            -- every pending version of the document, newest first, in one index scan
            cross join lateral (
              select array_agg(pv.id) as ids, array_agg(pv.version) as versions,
                     (array_agg(pv.run_after))[1] as run_after
                from (select v.id, v.version, v.run_after
                        from postpub.versions v
                       where v.document = x.document and v.state = 'post-publication'
                       order by v.version desc) pv) n
           where n.ids is not null) i
    -- stale: every pending version but the newest, and the newest too when the document
    -- already has a newer current or processing version
    left join lateral unnest(
      case when i.versions[1] < greatest(i.current, i.processing) then i.ids
           else i.ids[2:] end) as s(id) on true;

  -- The updates below go by id, and re-check the state for anything that changed it
  -- without the document lock (an operator's UPDATE): under READ COMMITTED the condition
  -- is re-evaluated on the latest row version. It is written `state::text = …` so that
  -- the planner cannot answer it with the partial pending index (a scan of the whole
  -- backlog when statistics are stale) and keeps to the primary key.
  if cardinality(v_stale) > 0 then
    with sup as (
      update postpub.versions v
         set state = 'superseded', state_changed_at = now()
        from unnest(v_stale, v_by) as t(id, by_version)
       where v.id = t.id and v.state::text = 'post-publication'
      returning v.id, v.document, t.by_version
    )
    insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    select sup.id, sup.document, 'post-publication', 'superseded', p_actor,
           format('version %s is newer', sup.by_version)
      from sup;
  end if;

  return query
  with cl as (
    update postpub.versions v
       set state = 'processing', attempts = v.attempts + 1, locked_by = p_actor,
           -- The caller's random token (a transaction id could be handed out again after
           -- a crash loses an asynchronously committed claim); the id is the fallback
           -- for calls by hand.
           locked_until = now() + p_lease, lease_token = coalesce(p_token, txid_current()),
           state_changed_at = now()
     where v.id = any(v_claim) and v.state::text = 'post-publication'
    returning v.id, v.document, v.version, v.is_tombstone, v.recipe_id, v.attempts,
              v.lease_token, octet_length(v.body) as body_bytes, v.created_at
  ), tr as (
    insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    select cl.id, cl.document, 'post-publication', 'processing', p_actor,
           format('claimed, attempt %s', cl.attempts)
      from cl
  )
  select cl.id, cl.document, cl.version, cl.is_tombstone, cl.recipe_id, cl.attempts,
         cl.lease_token, cl.body_bytes, cl.created_at
    from cl;
end $$;

-- _finish(actor, ids, tokens, outcomes, errors, retry_s, collated, warnings): the outcome
-- of each claimed version, in one transaction per batch.
--   outcome 'publish': current (previous current archived, outbox event, collated output
--                      stored), or superseded when a newer version is already current;
--   'error': errored with the reason; 'retry': back to post-publication after retry_s;
--   'release': back to post-publication now, the attempt not counted (shutdown).
-- Returns (version_id, result) with result the new state, or 'lost' when the lease is no
-- longer the caller's. Versions whose document is locked by an application transaction are
-- left out: the caller keeps them and finishes them a moment later.
--
-- Every statement is driven by the input arrays and reaches versions by primary key, and
-- the fencing test is `lease_token = token` (the token is set exactly while a version is
-- processing: see versions_lease_only_while_processing), so plans stay the same whatever
-- the statistics say.
create function postpub._finish(p_actor text, p_ids bigint[], p_tokens bigint[],
                                p_outcomes text[], p_errors text[],
                                p_retry_s double precision[], p_collated text[],
                                p_warnings text[])
returns table (version_id bigint, result text)
language plpgsql
set enable_seqscan = off set enable_bitmapscan = off set jit = off as $$
declare
  v_ord bigint[];     -- positions in the input of the versions finished now
  v_lost bigint[];    -- ids whose lease is no longer ours
  v_live text[];      -- documents whose archived current was a live (non-tombstone) version
  v_newer bigint[];   -- publishing versions older than their document's current one
  f_ids bigint[]; f_tokens bigint[]; f_outcomes text[]; f_errors text[];
  f_retry double precision[]; f_collated text[]; f_warnings text[];
begin
  -- Lock the documents of the versions still held (skipping any an application is
  -- publishing to right now).
  select coalesce(array_agg(h.ord), '{}') into v_ord
    from (select t.ord
            from unnest(p_ids, p_tokens) with ordinality as t(id, token, ord)
            join postpub.versions v on v.id = t.id and v.lease_token = t.token
            join postpub.documents d on d.document = v.document
           order by d.document
             for no key update of d skip locked) h;

  -- Versions left out are either busy (document locked) or no longer ours; only then is
  -- it worth telling which.
  if cardinality(v_ord) < cardinality(p_ids) then
    select coalesce(array_agg(t.id), '{}') into v_lost
      from unnest(p_ids, p_tokens) as t(id, token)
     where not exists (select 1 from postpub.versions v
                        where v.id = t.id and v.lease_token = t.token);
  end if;

  select array_agg(p_ids[o]), array_agg(p_tokens[o]), array_agg(p_outcomes[o]),
         array_agg(p_errors[o]), array_agg(p_retry_s[o]), array_agg(p_collated[o]),
         array_agg(p_warnings[o])
    into f_ids, f_tokens, f_outcomes, f_errors, f_retry, f_collated, f_warnings
    from unnest(v_ord) as o;

  if f_ids is not null then
    -- The previous current goes first: the one-current index allows no overlap. Remember
    -- which documents were live, since only deleting a live document emits `deleted`, and
    -- which publishing versions are older than their document's current one (superseded).
    with pub as (
      select v.id, v.document, v.version
        from unnest(f_ids, f_tokens, f_outcomes) as t(id, token, outcome)
        join postpub.versions v on v.id = t.id and v.lease_token = t.token
       where t.outcome = 'publish'
    ), cur as (
      -- one probe of the one-current index per document, whatever the statistics say
      select pub.id as pub_id, pub.version as pub_version, c.id, c.version
        from pub
        cross join lateral (
          select c.id, c.version from postpub.versions c
           where c.document = pub.document and c.state = 'current'
          offset 0) c
    ), a as (
      update postpub.versions c
         set state = 'archived', state_changed_at = now()
        from cur
       where c.id = cur.id and cur.version < cur.pub_version and c.state::text = 'current'
      returning c.id, c.document, c.is_tombstone, cur.pub_version as by_version
    ), t as (
      insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
      select a.id, a.document, 'current', 'archived', p_actor,
             format('replaced by version %s', a.by_version)
        from a
    )
    select coalesce(array_agg(a.document) filter (where not a.is_tombstone), '{}'),
           (select coalesce(array_agg(cur.pub_id), '{}') from cur
             where cur.version > cur.pub_version)
      into v_live, v_newer from a;

    return query
    with t as (
      select * from unnest(f_ids, f_tokens, f_outcomes, f_errors, f_retry)
             as t(id, token, outcome, error, retry_s)
    ), dec as materialized (  -- computed once per row, not once per use
      select t.id, t.token, t.outcome, t.error, t.retry_s,
             case
               when t.outcome = 'publish' and t.id = any(v_newer) then 'superseded'
               when t.outcome = 'publish' then 'current'
               when t.outcome = 'error' then 'errored'
               else 'post-publication'
             end::postpub.state as new_state
        from t
        join postpub.versions v on v.id = t.id and v.lease_token = t.token
    ), u as (
      update postpub.versions v
         set state = d.new_state,
             state_changed_at = now(),
             published_at = case when d.new_state = 'current' then now() else v.published_at end,
             last_error = case when d.outcome in ('error', 'retry') then d.error
                               when d.new_state = 'current' then null
                               else v.last_error end,
             run_after = case when d.outcome = 'retry'
                              then now() + make_interval(secs => d.retry_s)
                              else now() end,
             attempts = case when d.outcome = 'release' then greatest(v.attempts - 1, 0)
                             else v.attempts end,
             locked_by = null, locked_until = null, lease_token = null
        from dec d
       where v.id = d.id and v.lease_token = d.token
      returning v.id, v.document, v.version, v.is_tombstone, v.state, v.published_at,
                d.outcome, d.error, d.retry_s
    ), c as (
      insert into postpub.collated (version_id, content, warnings)
      select u.id, x.collated, coalesce(string_to_array(x.warnings, E'\n'), '{}')
        from u
        join unnest(f_ids, f_collated, f_warnings) as x(id, collated, warnings) on x.id = u.id
       where u.state = 'current' and x.collated is not null
    ), ev as (
      select postpub._event_id() as event_id, u.id, u.document, u.version, u.published_at,
             case when u.is_tombstone then 'deleted' else 'published' end::postpub.event_kind
               as kind
        from u
       where u.state = 'current' and (not u.is_tombstone or u.document = any(v_live))
    ), e as (
      insert into postpub.outbox (event_id, document, version_id, kind, payload)
      select ev.event_id, ev.document, ev.id, ev.kind,
             jsonb_build_object('event_id', ev.event_id, 'kind', ev.kind,
                                'document', ev.document, 'version', ev.version,
                                'version_id', ev.id, 'published_at', ev.published_at)
        from ev
    ), tr as (
      insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
      select u.id, u.document, 'processing', u.state, p_actor,
             case
               when u.state = 'current' and u.is_tombstone then 'document deleted'
               when u.state = 'current' then 'published'
               when u.state = 'superseded' then 'a newer version is already current'
               when u.outcome = 'retry' then format('retry in %ss: %s', round(u.retry_s::numeric, 3), u.error)
               when u.outcome = 'release' then 'released at shutdown'
               else u.error
             end
        from u
    )
    select u.id, u.state::text from u;
  end if;

  return query select l, 'lost'::text from unnest(coalesce(v_lost, '{}')) as l;
end $$;

-- _renew(ids, tokens, lease): extend the leases still held; returns the ids renewed (a
-- missing id means the lease was lost and its work should stop).
create function postpub._renew(p_ids bigint[], p_tokens bigint[], p_lease interval)
returns setof bigint
language sql
set enable_seqscan = off set enable_bitmapscan = off set jit = off as $$
  with l as (
    select v.id
      from unnest(p_ids, p_tokens) as t(id, token)
      join postpub.versions v on v.id = t.id and v.lease_token = t.token
     order by v.id
       for update of v
  )
  update postpub.versions v
     set locked_until = now() + p_lease
    from l
   where v.id = l.id
  returning v.id;
$$;

-- _rescue(actor, max_attempts): versions whose lease expired go back to post-publication
-- (or errored once they used up their attempts: a version that kills its daemon every time
-- must not loop forever). Rows and documents another transaction holds (a finish in
-- progress) are skipped, never waited for.
create function postpub._rescue(p_actor text, p_max_attempts int)
returns table (version_id bigint, document text, state text, held_by text)
language plpgsql
set enable_seqscan = off set enable_bitmapscan = off set jit = off as $$
declare
  v_back int;
begin
  return query
  with x as (
    select v.id, v.locked_by
      from postpub.versions v
      join postpub.documents d on d.document = v.document
     where v.state = 'processing' and v.locked_until < now()
       for update of v skip locked
       for no key update of d skip locked
  ), u as (
    update postpub.versions v
       set state = case when v.attempts >= p_max_attempts then 'errored'
                        else 'post-publication' end::postpub.state,
           last_error = format('lease expired while %s held it (attempt %s of %s)',
                               coalesce(x.locked_by, 'a daemon'), v.attempts, p_max_attempts),
           run_after = now(), locked_by = null, locked_until = null, lease_token = null,
           state_changed_at = now()
      from x
     where v.id = x.id
    returning v.id, v.document, v.state, x.locked_by, v.last_error
  ), t as (
    insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    select u.id, u.document, 'processing', u.state, p_actor, u.last_error from u
  )
  select u.id, u.document, u.state::text, u.locked_by from u;
  get diagnostics v_back = row_count;
  if v_back > 0 then
    perform pg_notify('postpub', 'versions');
  end if;
end $$;
