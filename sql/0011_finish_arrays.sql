-- 0011_finish_arrays: the finish hands its results back as one row of arrays, and takes
-- the inputs no version of a batch uses as empty arrays (issue 15).
--
-- Counted with callgrind on a single-user backend, rounds of claim + finish of 500
-- versions as the daemon sends them (docs/performance.md): 3.7 million instructions a
-- round fewer, of about 170.
--
-- 1. _finish returned its results as rows (RETURN QUERY over arrays it had just built),
--    which finish_batch.sql gathered into arrays again for the daemon. It now returns
--    the two arrays itself (OUT parameters, so the function is dropped and created: its
--    result type changes; daemons stop for the migration as for every one since 0008).
-- 2. The versions no longer held ('lost') are found in the writing statement itself: its
--    snapshot is from before its writes, so a version still held carries the caller's
--    token in it, whether this statement finished it or skipped its locked document.
--    Looked for only when some of the batch was left out, as before.
-- 3. errors, retry delays, collated output and warnings may be empty arrays when no
--    version of the batch has one: a multi-argument unnest pads them with nulls, and a
--    batch of no-op publishes no longer sends (and unnests) four arrays of 500 nulls.
--    A missing retry delay counts as 0 s.
drop function postpub._finish(text, bigint[], bigint[], text[], text[], double precision[],
                              text[], text[]);

create function postpub._finish(p_actor text, p_ids bigint[], p_tokens bigint[],
                                p_outcomes text[], p_errors text[],
                                p_retry_s double precision[], p_collated text[],
                                p_warnings text[],
                                out version_ids bigint[], out results text[])
language plpgsql
set enable_seqscan = off set enable_bitmapscan = off set enable_mergejoin = off set jit = off
set postpub.internal = on as $$
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
                            then now() + make_interval(secs => coalesce(t.retry_s, 0))
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
             when u.outcome = 'retry' then format('retry in %ss: %s', round(coalesce(u.retry_s, 0)::numeric, 3), u.error)
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
  ), lost as (
    -- Versions left out are busy (their document is locked) or no longer held with this
    -- token; only when some were left out is it worth telling which. This statement's
    -- snapshot is from before its writes: a version still held carries the token in it.
    select i.id
      from unnest(p_ids, p_tokens) as i(id, token)
     where (select count(*) from u) < cardinality(p_ids)
       and not exists (select 1 from postpub.versions v
                        where v.id = i.id and v.lease_token = i.token)
  )
  select coalesce(array_agg(r.id), '{}'), coalesce(array_agg(r.result), '{}')
    into version_ids, results
    from (select u.id, u.state::text as result from u
          union all
          select lost.id, 'lost' from lost) r;
end $$;

-- CREATE resets what _apply_grants set on the daemon's functions (SECURITY DEFINER, the
-- search_path, EXECUTE for postpub_worker): set it again.
select postpub._apply_grants();
