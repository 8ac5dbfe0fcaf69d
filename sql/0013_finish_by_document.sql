-- 0013_finish_by_document: the finish looks up each version's document only, and writes
-- what a batch of publishes does not need in statements of their own (issue 15).
--
-- Counted with benches/claim_finish_callgrind.sh (PostgreSQL's instructions per round of
-- claim + finish of 500 versions): the finish of 0011 did 101.8 million, the ceiling's
-- 84.8; with the same statement as the ceiling's plus the document lock, 86.1. Priced by
-- taking one part out at a time, the rest was:
--   * a second key lookup per version: the finish read each version row to learn its
--     document and number, then updated it (a second lookup of the same key). The daemon
--     has both from the claim: it now sends them, and the version row is read once, by the
--     update, which is where the fencing is decided anyway;
--   * the CTEs for writes a batch of publishes leaves empty (the queue rows of retries
--     and releases, the audit rows of errors, supersedes and archives, collated output,
--     versions no longer held): a data-modifying CTE costs its executor setup (its
--     table, its indexes) whether it writes or not. They are now statements of their own,
--     run only when the batch has such a version;
--   * the events built in a CTE of their own (materialized) and read back by the insert;
--   * the columns of errors, retry delays, collated output and warnings carried through
--     the statement's intermediate rows: they are read from the arguments by position.
-- Together 101.8 -> 94.2 million a round.
--
-- The previous current version is archived from the versions the update made current
-- (it was from the versions the lock saw held): a version no longer held is left out by
-- the update's fencing, and nothing is archived for it.
--
-- The signature changes (two arguments more): dropped and created. Daemons stop for the
-- migration, as for every one since 0008.
drop function postpub._finish(text, bigint[], bigint[], text[], text[], double precision[],
                              text[], text[]);

create function postpub._finish(p_actor text, p_ids bigint[], p_tokens bigint[],
                                p_outcomes text[], p_errors text[],
                                p_retry_s double precision[], p_collated text[],
                                p_warnings text[], p_documents text[], p_versions int[],
                                out version_ids bigint[], out results text[])
language plpgsql
set enable_seqscan = off set enable_bitmapscan = off set enable_mergejoin = off set jit = off
set postpub.internal = on as $$
declare
  v_at bigint[];            -- per finished version, its position in the arguments
  v_others int;             -- how many finished versions did not become current
  v_archived bigint[];
  v_archived_documents text[];
  v_archived_by int[];
begin
  with t as (
    -- Lock the documents, skipping any an application is publishing to right now (tried
    -- again by the daemon shortly), and decide each version's new state on the pointer as
    -- locked. In no particular order: a finish never waits for a document.
    select i.id, i.token, i.outcome, i.at, i.version,
           d.current_id as cur_id, d.current_version as cur_version,
           case
             -- a newer version is already current: this one can never be
             when i.outcome = 'publish' and d.current_version > i.version then 'superseded'
             when i.outcome = 'publish' then 'current'
             when i.outcome = 'error' then 'errored'
             else 'post-publication'
           end::postpub.state as new_state
      from unnest(p_ids, p_tokens, p_outcomes, p_documents, p_versions) with ordinality
             as i(id, token, outcome, document, version, at)
      join postpub.documents d on d.document = i.document
       for no key update of d skip locked
  ), u as (
    -- The versions still held with the caller's token (the fencing: a version rescued
    -- since, and maybe claimed again, is left alone).
    update postpub.versions v
       set state = t.new_state,
           state_changed_at = now(),
           published_at = case when t.new_state = 'current' then now() else v.published_at end,
           last_error = case when t.outcome in ('error', 'retry') then p_errors[t.at]
                             when t.new_state = 'current' then null
                             else v.last_error end,
           run_after = case when t.outcome = 'retry'
                            then now() + make_interval(secs => coalesce(p_retry_s[t.at], 0))
                            else now() end,
           attempts = case when t.outcome = 'release' then greatest(v.attempts - 1, 0)
                           else v.attempts end,
           locked_by = null, locked_until = null, lease_token = null,
           published_by = case when t.new_state = 'current' then p_actor
                                else v.published_by end,
           -- A claim that does not end in a publish is stored by _store_claim (see
           -- postpub.transitions) when this clears claimed_at.
           claimed_at = case when t.new_state = 'current' then v.claimed_at end,
           claimed_by = case when t.new_state = 'current' then v.claimed_by end
      from t
     where v.id = t.id and v.lease_token = t.token
    returning v.id, v.document, v.version, v.is_tombstone, v.state, v.published_at,
              t.token, t.at, t.cur_id, t.cur_version
  ), a as (
    -- the previous current, replaced by a newer one
    update postpub.versions c
       set state = 'archived', state_changed_at = now()
      from u
     where u.state = 'current' and c.id = u.cur_id and u.cur_version < u.version
       and c.state::text = 'current'
    returning c.id, c.document, c.is_tombstone, u.version as by_version
  ), dp as (
    -- the processing pointer cleared, the current one moved by a publish
    update postpub.documents d
       set processing_id = null, processing_version = null,
           current_id = case when u.state = 'current' then u.id else d.current_id end,
           current_version = case when u.state = 'current' then u.version
                                  else d.current_version end
      from u
     where d.document = u.document
  ), e as (
    -- A deletion emits `deleted` only when it replaced a live (non-tombstone) version.
    insert into postpub.outbox (event_id, document, version_id, kind, payload)
    select ev.event_id, ev.document, ev.id, ev.kind,
           jsonb_build_object('event_id', ev.event_id, 'kind', ev.kind,
                              'document', ev.document, 'version', ev.version,
                              'version_id', ev.id, 'published_at', ev.published_at)
      from (select postpub._event_id() as event_id, u.id, u.document, u.version,
                   u.published_at,
                   case when u.is_tombstone then 'deleted'
                        else 'published' end::postpub.event_kind as kind
              from u
             where u.state = 'current'
               and (not u.is_tombstone
                    or exists (select 1 from a
                                where a.document = u.document and not a.is_tombstone))) ev
  ), dl as (
    -- the rows of the claims this statement finishes completely
    delete from postpub.claims cl
     using (select u.token, count(*) as n from u group by u.token) f
     where cl.token = f.token and cardinality(cl.version_ids) = f.n
  )
  select coalesce(array_agg(u.id), '{}'), coalesce(array_agg(u.state::text), '{}'),
         coalesce(array_agg(u.at), '{}'), count(*) filter (where u.state <> 'current'),
         (select array_agg(a.id) from a), (select array_agg(a.document) from a),
         (select array_agg(a.by_version) from a)
    into version_ids, results, v_at, v_others,
         v_archived, v_archived_documents, v_archived_by
    from u;

  -- What a batch of publishes may not have, each only when it has some:
  if v_archived is not null then
    insert into postpub.transition_log (version_id, document, from_state, to_state, by, why)
    select x.id, x.document, 'current', 'archived', p_actor,
           format('replaced by version %s', x.by_version)
      from unnest(v_archived, v_archived_documents, v_archived_by) as x(id, document, by_version);
  end if;

  if cardinality(p_collated) > 0 then
    insert into postpub.collated (version_id, content, warnings)
    select x.id, p_collated[x.at], coalesce(string_to_array(p_warnings[x.at], E'\n'), '{}')
      from unnest(version_ids, results, v_at) as x(id, result, at)
     where x.result = 'current' and p_collated[x.at] is not null;
  end if;

  if v_others > 0 then
    -- Not for a publish (see postpub.transitions).
    insert into postpub.transition_log (version_id, document, from_state, to_state, by, why)
    select x.id, p_documents[x.at], 'processing', x.result::postpub.state, p_actor,
           case
             when x.result = 'superseded' then 'a newer version is already current'
             when p_outcomes[x.at] = 'retry'
               then format('retry in %ss: %s',
                           round(coalesce(p_retry_s[x.at], 0)::numeric, 3), p_errors[x.at])
             when p_outcomes[x.at] = 'release' then 'released at shutdown'
             else p_errors[x.at]
           end
      from unnest(version_ids, results, v_at) as x(id, result, at)
     where x.result <> 'current';
    -- retried and released versions, pending again
    insert into postpub.queue (version_id, document, version, run_after)
    select v.id, v.document, v.version, v.run_after
      from unnest(version_ids, results) as x(id, result)
      join postpub.versions v on v.id = x.id
     where x.result = 'post-publication';
  end if;

  if cardinality(version_ids) < cardinality(p_ids) then
    -- Versions left out are busy (their document is locked) or no longer held with this
    -- token; tell which are the latter.
    select version_ids || coalesce(array_agg(i.id), '{}'),
           results || coalesce(array_agg('lost'::text), '{}')
      into version_ids, results
      from unnest(p_ids, p_tokens) as i(id, token)
      left join unnest(version_ids) as f(id) on f.id = i.id
     where f.id is null
       and not exists (select 1 from postpub.versions v
                        where v.id = i.id and v.lease_token = i.token);
  end if;
end $$;

-- CREATE resets what _apply_grants set on the daemon's functions (SECURITY DEFINER, the
-- search_path, EXECUTE for postpub_worker): set it again.
select postpub._apply_grants();
