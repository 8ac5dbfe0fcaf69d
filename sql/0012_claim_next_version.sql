-- 0012_claim_next_version: the claim takes a document's next version without looking
-- for its other pending versions (issue 15).
--
-- 0010's claim took a picked version as it stands when its locked document row showed it
-- was the document's newest, newer than its current one, and a probe of the queue's
-- (document, version) index found no other pending version of the document. That probe
-- was 6.9 of the 164 million instructions of a round of claim + finish of 500 (14,000 a
-- version; benches/claim_finish_callgrind.sh): the largest part of the per-document
-- protocol that the bench's ceiling does not have.
--
-- When the newest version is the one right after the current one (or a document's first
-- version: nothing is current), any other pending version is older than the current one:
-- only an operator's requeue of an old errored version (or an old version put back in
-- the queue by hand) puts one there, since every claim of a newer version superseded
-- the older pending ones and a retry or a rescue returns the document's only processing
-- version. Such a version can never become current: a claim that reaches it supersedes it
-- ("version N is newer"). One the pick saw sends its document to the careful look of
-- step 2, which supersedes it in this claim, as before; one queued behind the new version
-- is superseded by the claim that reaches it, after the new version's, instead of by the
-- same claim. (A document picked twice, directly and for step 2, has its version claimed
-- once: the claim updates the ids it is given, each once.)
-- Versions further ahead of the current one (a burst of publishes, an errored version in
-- between) keep the probe.
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
  --    that is its document's newest (last_version) is claimed as it stands when it is
  --    the one after its current version (or its first), or when it is newer than its
  --    current one and the only pending one this statement saw; the other documents get
  --    the careful look of step 2.
  select coalesce(array_agg(x.version_id) filter (where x.direct), '{}'),
         coalesce(array_agg(distinct x.document) filter (where not x.direct), '{}')
    into v_claim, v_docs
    from (select q.version_id, d.document,
                 q.version = d.last_version
                   and (q.version = coalesce(d.current_version, 0) + 1
                        or (q.version > coalesce(d.current_version, 0)
                            and not exists (select 1 from postpub.queue o
                                             where o.document = q.document
                                               and o.version_id <> q.version_id)))
                   as direct
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

-- CREATE OR REPLACE resets what _apply_grants set on the daemon's functions (SECURITY
-- DEFINER, the search_path): set it again.
select postpub._apply_grants();
