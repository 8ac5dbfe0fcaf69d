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

-- _claim(actor, limit, lease): claim up to `limit` versions, one per document, the newest
-- pending one; older pending versions of those documents become superseded.
create function postpub._claim(p_actor text, p_limit int, p_lease interval)
returns table (version_id bigint, document text, version int, is_tombstone boolean,
               recipe_id bigint, attempts int, lease_token bigint, body_bytes int,
               created_at timestamptz)
language plpgsql as $$
declare
  v_docs text[];
begin
  select coalesce(array_agg(distinct x.document), '{}') into v_docs
    from (select d.document
            from postpub.versions v
            join postpub.documents d on d.document = v.document
           where v.state = 'post-publication' and v.run_after <= now()
             and not exists (select 1 from postpub.versions p
                              where p.document = v.document and p.state = 'processing')
           order by v.run_after, v.id
           limit p_limit
             for no key update of d skip locked) x;
  if cardinality(v_docs) = 0 then
    return;
  end if;

  return query
  with pend as (
    select v.id, v.document, v.version, v.run_after
      from postpub.versions v
     where v.document = any(v_docs) and v.state = 'post-publication'
  ), top as (
    -- what a pending version must be newer than, and whether the document is busy
    select v.document, max(v.version) as version, bool_or(v.state = 'processing') as busy
      from postpub.versions v
     where v.document = any(v_docs) and v.state in ('processing', 'current')
     group by v.document
  ), newest as (
    select distinct on (p.document) p.id, p.document, p.version, p.run_after
      from pend p
     order by p.document, p.version desc
  ), stale as (
    select p.id, p.document, n.version as newest, t.version as top
      from pend p
      join newest n on n.document = p.document
      left join top t on t.document = p.document
     where p.id <> n.id or p.version < coalesce(t.version, 0)
  ), sup as (
    update postpub.versions v
       set state = 'superseded', state_changed_at = now()
      from stale s
     where v.id = s.id and v.state = 'post-publication'
    returning v.id, v.document, greatest(s.newest, s.top) as by_version
  ), cl as (
    update postpub.versions v
       set state = 'processing', attempts = v.attempts + 1, locked_by = p_actor,
           locked_until = now() + p_lease, lease_token = txid_current(),
           state_changed_at = now()
      from newest n
      left join top t on t.document = n.document
     where v.id = n.id and v.state = 'post-publication' and n.run_after <= now()
       and not coalesce(t.busy, false) and n.version > coalesce(t.version, 0)
    returning v.id, v.document, v.version, v.is_tombstone, v.recipe_id, v.attempts,
              v.lease_token, octet_length(v.body) as body_bytes, v.created_at
  ), tr as (
    insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    select sup.id, sup.document, 'post-publication'::postpub.state,
           'superseded'::postpub.state, p_actor,
           format('version %s is newer', sup.by_version)
      from sup
    union all
    select cl.id, cl.document, 'post-publication'::postpub.state,
           'processing'::postpub.state, p_actor,
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
create function postpub._finish(p_actor text, p_ids bigint[], p_tokens bigint[],
                                p_outcomes text[], p_errors text[],
                                p_retry_s double precision[], p_collated text[],
                                p_warnings text[])
returns table (version_id bigint, result text)
language plpgsql as $$
declare
  v_docs text[];
  v_live text[];
begin
  select coalesce(array_agg(x.document), '{}') into v_docs
    from (select d.document
            from postpub.documents d
           where d.document in (select v.document from postpub.versions v
                                 where v.id = any(p_ids))
           order by d.document
             for no key update skip locked) x;
  -- Our own rows, in id order (lease renewal locks in the same order).
  perform 1 from postpub.versions v
    where v.id = any(p_ids) and v.document = any(v_docs)
    order by v.id
      for update;

  -- The previous current goes first: the one-current index allows no overlap. Remember
  -- which documents were live, since only deleting a live document emits `deleted`.
  with inp as (
    select * from unnest(p_ids, p_tokens, p_outcomes) as t(id, token, outcome)
  ), pub as (
    select v.document, v.version
      from postpub.versions v
      join inp on inp.id = v.id and inp.token = v.lease_token
     where v.state = 'processing' and v.document = any(v_docs) and inp.outcome = 'publish'
  ), a as (
    update postpub.versions c
       set state = 'archived', state_changed_at = now()
      from pub
     where c.document = pub.document and c.state = 'current' and c.version < pub.version
    returning c.id, c.document, c.is_tombstone, pub.version as by_version
  ), t as (
    insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    select a.id, a.document, 'current', 'archived', p_actor,
           format('replaced by version %s', a.by_version)
      from a
  )
  select coalesce(array_agg(a.document) filter (where not a.is_tombstone), '{}')
    into v_live from a;

  return query
  with inp as (
    select * from unnest(p_ids, p_tokens, p_outcomes, p_errors, p_retry_s, p_collated,
                         p_warnings)
           as t(id, token, outcome, error, retry_s, collated, warnings)
  ), dec as (
    select v.id, inp.token, inp.outcome, inp.error, inp.retry_s, inp.collated, inp.warnings,
           case
             when inp.outcome = 'publish' and exists (
                    select 1 from postpub.versions c
                     where c.document = v.document and c.state = 'current'
                       and c.version > v.version) then 'superseded'
             when inp.outcome = 'publish' then 'current'
             when inp.outcome = 'error' then 'errored'
             else 'post-publication'
           end::postpub.state as new_state
      from postpub.versions v
      join inp on inp.id = v.id and inp.token = v.lease_token
     where v.state = 'processing' and v.document = any(v_docs)
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
     where v.id = d.id and v.state = 'processing' and v.lease_token = d.token
    returning v.id, v.document, v.version, v.is_tombstone, v.state, v.attempts,
              v.published_at, d.outcome, d.error, d.retry_s, d.collated, d.warnings
  ), c as (
    insert into postpub.collated (version_id, content, warnings)
    select u.id, u.collated, coalesce(string_to_array(u.warnings, E'\n'), '{}')
      from u
     where u.state = 'current' and u.collated is not null
  ), ev as (
    select gen_random_uuid() as event_id, u.id, u.document, u.version, u.published_at,
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
  ), t as (
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
  select u.id, u.state::text from u
  union all
  select t.id, 'lost'
    from unnest(p_ids, p_tokens) as t(id, token)
   where not exists (select 1 from postpub.versions v
                      where v.id = t.id and v.state = 'processing' and v.lease_token = t.token);
end $$;

-- _renew(ids, tokens, lease): extend the leases still held; returns the ids renewed (a
-- missing id means the lease was lost and its work should stop).
create function postpub._renew(p_ids bigint[], p_tokens bigint[], p_lease interval)
returns setof bigint
language sql as $$
  with l as (
    select v.id
      from postpub.versions v
      join unnest(p_ids, p_tokens) as t(id, token) on t.id = v.id and t.token = v.lease_token
     where v.state = 'processing'
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
-- must not loop forever). Rows another transaction holds are skipped, never waited for.
create function postpub._rescue(p_actor text, p_max_attempts int)
returns table (version_id bigint, document text, state text, held_by text)
language plpgsql as $$
declare
  v_back int;
begin
  return query
  with x as (
    select v.id, v.locked_by
      from postpub.versions v
     where v.state = 'processing' and v.locked_until < now()
       for update skip locked
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
