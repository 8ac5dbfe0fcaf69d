-- 0010_lean_claim_and_finish: less work per version in the claim and the finish (issue 15),
-- found by counting PostgreSQL's instructions (valgrind's callgrind on a backend) for
-- rounds of claim + finish of 500 versions, next to the same writes as plain SQL (the
-- bench's ceiling, sql/bench/ceiling_*.sql): 194 million instructions a round before,
-- 168 after, the ceiling 134. What went (docs/performance.md has the figures):
--
-- 1. The claim rows were compressed. A claim's version_ids (500 ids, 4 kB) is over the
--    2 kB at which PostgreSQL compresses a row (pglz, 3 % of all instructions) and reads
--    it back decompressed. A claim row is written once and deleted soon: it stays as it
--    is up to a full page.
alter table postpub.claims set (toast_tuple_target = 8160);

-- 2. The claim's second look at every document. After locking the documents, the claim
--    read each one again in a new snapshot (its pointers and its pending versions) so
--    that a version published meanwhile is seen. The locked row itself already says
--    whether anything was: it is read as last committed, and every new version of a
--    document moves its last_version. A version that is its document's newest, newer
--    than the current one and the only pending one the pick saw is claimed as it stands;
--    only the other documents get the second look (a document with several pending
--    versions, one published meanwhile, one older than its current). A version requeued
--    meanwhile (errored back to pending, which does not touch the document) is left for
--    a later claim, which supersedes it: the same as had it been requeued just after
--    this claim.
create or replace function postpub._claim(p_actor text, p_limit int, p_lease interval,
                                          p_token bigint default null)
returns table (version_id bigint, document text, version int, is_tombstone boolean,
               recipe_id bigint, attempts int, lease_token bigint, body_bytes int,
               created_at timestamptz)
language plpgsql
-- enable_sort off as well: the pick below must walk the queue in its index order. With
-- the documents' statistics taken while the table was small (a new database, autovacuum
-- behind), the planner otherwise walked every document (those not processing) and sorted
-- their queue rows, on every claim: commit -> claim doubled at 200 versions/s.
set enable_seqscan = off set enable_bitmapscan = off set enable_sort = off set jit = off
set postpub.internal = on as $$
declare
  v_docs text[];
  v_claim bigint[];
  v_stale bigint[];
  v_by int[];
  v_more bigint[];
begin
  -- 1. Due pending versions, oldest first, of documents not busy that no other
  --    transaction holds. A locked document row is read as last committed, so a version
  --    that is its document's newest (last_version), newer than its current one and
  --    the only pending one this statement saw, is claimed as it stands; the other
  --    documents get the careful look of step 2.
  select coalesce(array_agg(x.version_id) filter (where x.direct), '{}'),
         coalesce(array_agg(distinct x.document) filter (where not x.direct), '{}')
    into v_claim, v_docs
    from (select q.version_id, d.document,
                 q.version = d.last_version and q.version > coalesce(d.current_version, 0)
                   and not exists (select 1 from postpub.queue o
                                    where o.document = q.document
                                      and o.version_id <> q.version_id) as direct
            from postpub.queue q
            join postpub.documents d on d.document = q.document
           where q.run_after <= now() and d.processing_id is null
           order by q.run_after, q.version_id
           limit p_limit
             for no key update of d skip locked) x;
  if cardinality(v_claim) = 0 and cardinality(v_docs) = 0 then
    return;
  end if;

  -- 2. Per other locked document (a new snapshot): its pending versions newest first,
  --    its current version number and its processing one (the pointers). The newest
  --    pending one is claimed unless it is not due, the document is busy or a newer
  --    version is current; the other pending ones (all of them when a newer one is
  --    current or processing) are stale.
  if cardinality(v_docs) > 0 then
    select coalesce(array_agg(i.ids[1]) filter (
             where i.run_after <= now() and i.processing is null
               and i.versions[1] > coalesce(i.current_version, 0)), '{}'),
           coalesce(array_agg(s.id) filter (where s.id is not null), '{}'),
           coalesce(array_agg(greatest(i.versions[1], i.current_version, i.processing))
                      filter (where s.id is not null), '{}')
      into v_more, v_stale, v_by
      from (select d.current_version, n.ids, n.versions, n.run_after,
                   d.processing_version as processing
              from unnest(v_docs) as x(document)
              join postpub.documents d on d.document = x.document
              cross join lateral (
                select array_agg(pq.version_id) as ids, array_agg(pq.version) as versions,
                       (array_agg(pq.run_after))[1] as run_after
                  from (select q.version_id, q.version, q.run_after
                          from postpub.queue q
                         where q.document = x.document
                         order by q.version desc) pq) n
             where n.ids is not null) i
      left join lateral unnest(
        case when i.versions[1] < greatest(i.current_version, i.processing) then i.ids
             else i.ids[2:] end) as s(id) on true;
    v_claim := v_claim || v_more;
  end if;

  if cardinality(coalesce(v_stale, '{}')) > 0 then
    with sup as (
      update postpub.versions v
         set state = 'superseded', state_changed_at = now()
        from unnest(v_stale, v_by) as t(id, by_version)
       where v.id = t.id and v.state::text = 'post-publication'
      returning v.id, v.document, t.by_version
    ), tr as (
      insert into postpub.transition_log (version_id, document, from_state, to_state, by, why)
      select sup.id, sup.document, 'post-publication', 'superseded', p_actor,
             format('version %s is newer', sup.by_version)
        from sup
    )
    delete from postpub.queue q where q.version_id = any(v_stale);
  end if;

  return query
  with cl as (
    update postpub.versions v
       set state = 'processing', attempts = v.attempts + 1, locked_by = p_actor,
           -- The caller's random token (a transaction id could be handed out again after
           -- a crash loses an asynchronously committed claim); the id is the fallback
           -- for calls by hand.
           locked_until = now() + p_lease, lease_token = coalesce(p_token, txid_current()),
           state_changed_at = now(),
           -- the audit row of this claim (see postpub.transitions)
           claimed_at = now(), claimed_by = p_actor
     where v.id = any(v_claim) and v.state::text = 'post-publication'
    returning v.id, v.document, v.version, v.is_tombstone, v.recipe_id, v.attempts,
              v.lease_token, octet_length(v.body) as body_bytes, v.created_at
  ), dq as (
    delete from postpub.queue q where q.version_id = any(v_claim)
  ), dp as (
    -- the processing pointer, on the rows locked above
    update postpub.documents d
       set processing_id = cl.id, processing_version = cl.version
      from cl
     where d.document = cl.document
  ), cr as (
    -- the claim's row, for the rescuer (one per call: the token is the call's)
    insert into postpub.claims as c (token, actor, locked_until, version_ids)
    select coalesce(p_token, txid_current()), p_actor, now() + p_lease, array_agg(cl.id)
      from cl
    having count(*) > 0
    on conflict (token) do update
      set locked_until = least(c.locked_until, excluded.locked_until),
          version_ids = c.version_ids || excluded.version_ids
  )
  select cl.id, cl.document, cl.version, cl.is_tombstone, cl.recipe_id, cl.attempts,
         cl.lease_token, cl.body_bytes, cl.created_at
    from cl;
end $$;

-- 3. The finish of a batch in one statement.
--  * The lock of the documents was a statement of its own whose result came back to
--    PL/pgSQL as arrays; the writes then rebuilt their rows from those arrays by position
--    (p_outcomes[o.ord], ...) and the lock sorted the documents by name first. Now the
--    lock is the first CTE of the writing statement, in no particular order (a finish
--    never waits for a document: SKIP LOCKED). A locking read returns the newest committed
--    version of each row it locks, its select list evaluated again on it, so the current
--    pointer the decision reads (superseded or current) is the one this statement moves,
--    as when it was a statement of its own. (0009 said folding the lock into the writes
--    would miss a publisher's newer current version: it does not; checked by updating a
--    row while a locking read of it was under way, which returned the new value.) The
--    version rows are read by the update itself, which re-reads one a concurrent rescue
--    changed and then finds the token gone.
--  * The release of finished claims was a transaction of its own after each finish
--    (_release_claims, with one probe per version for its guard). A claim all of whose
--    versions this statement finishes has nothing left for the rescuer: its row goes
--    here. A claim finished over several batches is still released by the daemon.
--  * Versions no longer held ('lost') are told apart from those whose document is busy
--    only when some of the batch was left out, after the writes.
create or replace function postpub._finish(p_actor text, p_ids bigint[], p_tokens bigint[],
                                           p_outcomes text[], p_errors text[],
                                           p_retry_s double precision[], p_collated text[],
                                           p_warnings text[])
returns table (version_id bigint, result text)
language plpgsql
set enable_seqscan = off set enable_bitmapscan = off set enable_mergejoin = off set jit = off
set postpub.internal = on as $$
declare
  v_done bigint[];
  v_state text[];
begin
  with t as (
    -- Lock the documents of the versions still held, skipping any an application is
    -- publishing to right now (tried again by the daemon shortly), and decide each
    -- version's new state on the pointer as locked. In no particular order: a finish
    -- never waits for a document (0009 sorted them first, 500 text keys a batch).
    select i.id, i.token, i.outcome, i.error, i.retry_s, i.collated, i.warnings, v.version,
           d.current_id as cur_id, d.current_version as cur_version,
           case
             -- a newer version is already current: this one can never be
             when i.outcome = 'publish' and d.current_version > v.version then 'superseded'
             when i.outcome = 'publish' then 'current'
             when i.outcome = 'error' then 'errored'
             else 'post-publication'
           end::postpub.state as new_state
      from unnest(p_ids, p_tokens, p_outcomes, p_errors, p_retry_s, p_collated, p_warnings)
             as i(id, token, outcome, error, retry_s, collated, warnings)
      join postpub.versions v on v.id = i.id and v.lease_token = i.token
      join postpub.documents d on d.document = v.document
       for no key update of d skip locked
  ), a as (
    -- the previous current, replaced by a newer one
    update postpub.versions c
       set state = 'archived', state_changed_at = now()
      from t
     where t.new_state = 'current' and c.id = t.cur_id and t.cur_version < t.version
       and c.state::text = 'current'
    returning c.id, c.document, c.is_tombstone, t.version as by_version
  ), ta as (
    insert into postpub.transition_log (version_id, document, from_state, to_state, by, why)
    select a.id, a.document, 'current', 'archived', p_actor,
           format('replaced by version %s', a.by_version)
      from a
  ), u as (
    update postpub.versions v
       set state = t.new_state,
           state_changed_at = now(),
           published_at = case when t.new_state = 'current' then now() else v.published_at end,
           last_error = case when t.outcome in ('error', 'retry') then t.error
                             when t.new_state = 'current' then null
                             else v.last_error end,
           run_after = case when t.outcome = 'retry'
                            then now() + make_interval(secs => t.retry_s)
                            else now() end,
           attempts = case when t.outcome = 'release' then greatest(v.attempts - 1, 0)
                           else v.attempts end,
           locked_by = null, locked_until = null, lease_token = null,
           published_by = case when t.new_state = 'current' then p_actor
                                else v.published_by end,
           claimed_at = case when t.new_state = 'current' then v.claimed_at end,
           claimed_by = case when t.new_state = 'current' then v.claimed_by end
      from t
     where v.id = t.id and v.lease_token = t.token
    returning v.id, v.document, v.version, v.is_tombstone, v.state, v.published_at,
              v.run_after, t.token, t.outcome, t.error, t.retry_s, t.collated, t.warnings
  ), dp as (
    -- the processing pointer cleared, the current one moved by a publish
    update postpub.documents d
       set processing_id = null, processing_version = null,
           current_id = case when u.state = 'current' then u.id else d.current_id end,
           current_version = case when u.state = 'current' then u.version
                                  else d.current_version end
      from u
     where d.document = u.document
  ), q as (
    insert into postpub.queue (version_id, document, version, run_after)
    select u.id, u.document, u.version, u.run_after from u
     where u.state = 'post-publication'
  ), c as (
    insert into postpub.collated (version_id, content, warnings)
    select u.id, u.collated, coalesce(string_to_array(u.warnings, E'\n'), '{}')
      from u
     where u.state = 'current' and u.collated is not null
  ), ev as (
    -- A deletion emits `deleted` only when it replaced a live (non-tombstone) version.
    select postpub._event_id() as event_id,
           u.id, u.document, u.version, u.published_at,
           case when u.is_tombstone then 'deleted' else 'published' end::postpub.event_kind
             as kind
      from u
     where u.state = 'current'
       and (not u.is_tombstone
            or exists (select 1 from a where a.document = u.document and not a.is_tombstone))
  ), e as (
    insert into postpub.outbox (event_id, document, version_id, kind, payload)
    select ev.event_id, ev.document, ev.id, ev.kind,
           jsonb_build_object('event_id', ev.event_id, 'kind', ev.kind,
                              'document', ev.document, 'version', ev.version,
                              'version_id', ev.id, 'published_at', ev.published_at)
      from ev
  ), tr as (
    -- Not for a publish (see postpub.transitions); the claim it ends was stored by
    -- _store_claim when `u` cleared claimed_at.
    insert into postpub.transition_log (version_id, document, from_state, to_state, by, why)
    select u.id, u.document, 'processing', u.state, p_actor,
           case
             when u.state = 'superseded' then 'a newer version is already current'
             when u.outcome = 'retry' then format('retry in %ss: %s', round(u.retry_s::numeric, 3), u.error)
             when u.outcome = 'release' then 'released at shutdown'
             else u.error
           end
      from u
     where u.state <> 'current'
  ), dl as (
    -- the rows of the claims this statement finishes completely
    delete from postpub.claims cl
     using (select u.token, count(*) as n from u group by u.token) f
     where cl.token = f.token and cardinality(cl.version_ids) = f.n
  )
  select coalesce(array_agg(u.id), '{}'), coalesce(array_agg(u.state::text), '{}')
    into v_done, v_state
    from u;

  return query select * from unnest(v_done, v_state);

  -- Versions left out are either busy (document locked) or no longer ours; only then is
  -- it worth telling which.
  if cardinality(v_done) < cardinality(p_ids) then
    return query
    select i.id, 'lost'::text
      from unnest(p_ids, p_tokens) as i(id, token)
     where i.id <> all(v_done)
       and not exists (select 1 from postpub.versions v
                        where v.id = i.id and v.lease_token = i.token);
  end if;
end $$;

-- CREATE OR REPLACE resets what _apply_grants set on the daemon's functions (SECURITY
-- DEFINER, the search_path): set it again.
select postpub._apply_grants();
