-- 0009_hot_path: fewer writes per version on the claim and the finish (issue 15), each
-- found in the WAL of a drain (pg_waldump --stats) and measured side by side.
--
-- 1. Room on each page for a version's claim and finish to stay HOT.
--
-- 0008 left versions at fillfactor 50. A claim rewrites every version of a batch, and a
-- batch is the rows published together, so neighbours on a page: each page must take a
-- new row version for each of its rows inside one statement (nothing can be pruned before
-- the claim commits). A claimed row is half as large again as a pending one (who holds the
-- lease, until when, the token, the claim's time and actor), so at 50 only about two
-- thirds of the claimed rows fit and the rest moved to another page with an entry in each
-- index (drain of 100,000: 55 % of the updates HOT, 46 µs of CPU per version). At 25 a
-- page holds its rows three times over: every update was HOT and the drain took 39 µs of
-- CPU per version (same sitting, see docs/performance.md).
--
-- The price is space: new heap pages of versions are filled to a quarter, about 0.6 kB
-- per version with a small body instead of 0.2 kB. A body over ~2 kB is compressed or
-- moved out of line (TOAST) either way, so for real documents the difference is small.
-- An operator who wants the space back for a history that no longer changes can set a
-- higher fillfactor; only pages written afterwards follow it.
alter table postpub.versions set (fillfactor = 25);
-- The documents row takes the pointer update of each finish (and the claim's row lock).
alter table postpub.documents set (fillfactor = 30);

-- 2. The claim a version row is about to clear is stored by an AFTER trigger. As a BEFORE
-- trigger (0008), its mere presence made PostgreSQL fetch and lock every updated version
-- row before looking at its WHEN clause: one more heap lock (a WAL record, often with a
-- full-page image) per claim and per finish, two of the four row locks per version in a
-- drain. An AFTER trigger's WHEN clause is evaluated as the row is written, and false on
-- the hot path (a claim sets claimed_at from null, a publish keeps it), so nothing is
-- queued. The stored row carries the claim's own time, so it still sorts before the row
-- that ends it (postpub.transitions is ordered by `at`, then `id`).
drop trigger _100_store_claim on postpub.versions;
create or replace function postpub._store_claim() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  insert into postpub.transition_log (version_id, document, from_state, to_state, at, by, why)
  values (OLD.id, OLD.document, 'post-publication', 'processing', OLD.claimed_at,
          OLD.claimed_by, 'claimed, attempt ' || OLD.attempts);  -- as the view shows it
  return null;
end $$;
create trigger _100_store_claim after update on postpub.versions
  for each row
  when (OLD.claimed_at is not null and NEW.claimed_at is distinct from OLD.claimed_at)
  execute function postpub._store_claim();

-- 3. The processing version of a document is a pointer on its row, like the current one;
-- the leases table goes.
--
-- With postpub.leases (0008) a claim inserted a lease row and its key, and the finish
-- deleted it: two heap writes and an index entry per version, and four probes of its key
-- (the claim's "not busy" test, its re-read, the insert's uniqueness check, the finish's
-- delete). The claim locks the document row anyway: it now also writes the pointer there
-- (one in-place update of a row it holds), and the finish clears it in the update that
-- moves the current pointer. At most one processing version per document holds by
-- construction (one column).
--
-- What the leases also gave is a way for the rescuer to find expired leases without
-- scanning every document. That is postpub.claims: one row per claim (a batch, one
-- fencing token) with the ids it took and when its lease ends. The renewal extends it, the
-- claiming daemon deletes it once every version of the batch is finished, and the rescuer
-- reads only the expired ones (then deletes those whose versions no longer hold the
-- token, which is how the rows of a daemon that died go).
alter table postpub.documents
  add column processing_id bigint,
  add column processing_version int;

create table postpub.claims (
  token        bigint primary key,   -- the fencing token every version of the claim carries
  actor        text not null,
  -- When the rescuer looks at it next: the earliest lease end among its versions (a
  -- renewal of the batch moves it on; the rescuer sets it to the earliest one left).
  locked_until timestamptz not null,
  version_ids  bigint[] not null
);
alter table postpub.claims set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

-- The processing versions as their claims lead to them: what the metrics, the console and
-- an operator count and list (a claim row can outlive its versions until it is released
-- or rescued; only a version still carrying the claim's token is held by it).
create view postpub.claimed as
select c.token, v.id as version_id, v.document, v.locked_by, v.locked_until
  from postpub.claims c
  cross join lateral unnest(c.version_ids) as i(id)
  join postpub.versions v on v.id = i.id and v.lease_token = c.token;

update postpub.documents d
   set processing_id = v.id, processing_version = v.version
  from postpub.versions v
 where v.document = d.document and v.state = 'processing';
insert into postpub.claims (token, actor, locked_until, version_ids)
select v.lease_token, coalesce(min(v.locked_by), 'unknown'), min(coalesce(v.locked_until, now())),
       array_agg(v.id order by v.id)
  from postpub.versions v
 where v.state = 'processing'
 group by v.lease_token;

-- The triggers for writers other than the claim and the finish: the processing pointer
-- and the claim row instead of the lease.
create or replace function postpub._sync_version() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  v_old postpub.state := case when TG_OP = 'UPDATE' then OLD.state end;
  v_holder bigint;
begin
  if v_old is distinct from NEW.state then
    if v_old = 'post-publication' then
      delete from postpub.queue q where q.version_id = OLD.id;
    elsif v_old = 'processing' then
      update postpub.documents d set processing_id = null, processing_version = null
       where d.document = OLD.document and d.processing_id = OLD.id;
    elsif v_old = 'current' then
      update postpub.documents d set current_id = null, current_version = null
       where d.document = OLD.document and d.current_id = OLD.id;
    end if;
  end if;

  if NEW.state = 'post-publication' then
    insert into postpub.queue (version_id, document, version, run_after)
    values (NEW.id, NEW.document, NEW.version, NEW.run_after)
    on conflict (version_id) do update set run_after = excluded.run_after;
  elsif NEW.state = 'processing' then
    if v_old is distinct from 'processing' then
      update postpub.documents d set processing_id = NEW.id, processing_version = NEW.version
       where d.document = NEW.document and (d.processing_id is null or d.processing_id = NEW.id)
      returning d.processing_id into v_holder;
      if v_holder is null then
        raise exception 'document "%" already has a processing version (id %); version % cannot be processing too',
          NEW.document, (select d.processing_id from postpub.documents d where d.document = NEW.document), NEW.id
          using errcode = '23505', constraint = 'documents_one_processing';
      end if;
    end if;
    -- Its claim row (a new lease, a changed one, another token): the rescuer finds it
    -- there no later than this lease ends.
    insert into postpub.claims as c (token, actor, locked_until, version_ids)
    values (NEW.lease_token, coalesce(NEW.locked_by, 'unknown'), coalesce(NEW.locked_until, now()),
            array[NEW.id])
    on conflict (token) do update
      set locked_until = least(c.locked_until, excluded.locked_until),
          version_ids = case when NEW.id = any(c.version_ids) then c.version_ids
                             else c.version_ids || NEW.id end;
  elsif NEW.state = 'current' and v_old is distinct from 'current' then
    update postpub.documents d set current_id = NEW.id, current_version = NEW.version
     where d.document = NEW.document and (d.current_id is null or d.current_id = NEW.id)
    returning d.current_id into v_holder;
    if v_holder is null then
      raise exception 'document "%" already has a current version (id %); version % cannot be current too',
        NEW.document, (select d.current_id from postpub.documents d where d.document = NEW.document), NEW.id
        using errcode = '23505', constraint = 'documents_one_current';
    end if;
  end if;
  return null;
end $$;

create or replace function postpub._unsync_version() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  delete from postpub.queue q where q.version_id = OLD.id;
  update postpub.documents d set processing_id = null, processing_version = null
   where d.document = OLD.document and d.processing_id = OLD.id;
  update postpub.documents d set current_id = null, current_version = null
   where d.document = OLD.document and d.current_id = OLD.id;
  return null;
end $$;

drop trigger _100_sync_update on postpub.versions;
create trigger _100_sync_update after update on postpub.versions
  for each row
  when ((OLD.state is distinct from NEW.state or OLD.run_after is distinct from NEW.run_after
         or OLD.locked_until is distinct from NEW.locked_until
         or OLD.lease_token is distinct from NEW.lease_token)
        and current_setting('postpub.internal', true) is distinct from 'on')
  execute function postpub._sync_version();

drop table postpub.leases;

-- 4. The outbox: one index entry fewer per event. A new event (undelivered) was entered in
-- four indexes: the id, the event id, outbox_undelivered (document, id) for the relay, and
-- outbox_document (document, id, every event) for the console's document page. The page
-- now reads the undelivered ones from outbox_undelivered and the delivered ones from a
-- partial index of its own, which a new event is not in: the entry is made when the relay
-- records the delivery, an update that already enters the row in every index anyway (it
-- changes delivered_at, which outbox_undelivered depends on).
drop index postpub.outbox_document;
create index outbox_delivered_document on postpub.outbox (document, id)
  where delivered_at is not null;

-- 5. The hot path with the pointer and the claim rows. Same signatures, results and
-- locking protocol as in 0008 (see there and 0003_worker).
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
begin
  -- 1. Documents with due pending versions, oldest first, not busy, that no other
  --    transaction holds.
  select coalesce(array_agg(distinct x.document), '{}') into v_docs
    from (select d.document
            from postpub.queue q
            join postpub.documents d on d.document = q.document
           where q.run_after <= now() and d.processing_id is null
           order by q.run_after, q.version_id
           limit p_limit
             for no key update of d skip locked) x;
  if cardinality(v_docs) = 0 then
    return;
  end if;

  -- 2. Per locked document (a new snapshot): its pending versions newest first, its
  --    current version number (the pointer) and its processing one (the lease). The newest pending one is
  --    claimed unless it is not due, the document is busy or a newer version is current;
  --    the other pending ones (all of them when a newer one is current or processing) are
  --    stale.
  select coalesce(array_agg(i.ids[1]) filter (
           where i.run_after <= now() and i.processing is null
             and i.versions[1] > coalesce(i.current_version, 0)), '{}'),
         coalesce(array_agg(s.id) filter (where s.id is not null), '{}'),
         coalesce(array_agg(greatest(i.versions[1], i.current_version, i.processing))
                    filter (where s.id is not null), '{}')
    into v_claim, v_stale, v_by
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

  if cardinality(v_stale) > 0 then
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

create or replace function postpub._finish(p_actor text, p_ids bigint[], p_tokens bigint[],
                                           p_outcomes text[], p_errors text[],
                                           p_retry_s double precision[], p_collated text[],
                                           p_warnings text[])
returns table (version_id bigint, result text)
language plpgsql
set enable_seqscan = off set enable_bitmapscan = off set jit = off
set postpub.internal = on as $$
declare
  v_ord bigint[];       -- positions in the input of the versions finished now
  v_lost bigint[];      -- ids whose lease is no longer ours
  v_cur bigint[];       -- per finished version: its document's current version (id) ...
  v_cur_version int[];  -- ... and number, read under the document lock
  v_version int[];      -- per finished version: its own number
begin
  -- Lock the documents of the versions still held (skipping any an application is
  -- publishing to right now). A locked row is read as last committed, so the pointer read
  -- here is the one this transaction will move.
  select coalesce(array_agg(h.ord), '{}'), array_agg(h.current_id), array_agg(h.current_version),
         array_agg(h.version)
    into v_ord, v_cur, v_cur_version, v_version
    from (select t.ord, v.version, d.current_id, d.current_version
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

  if cardinality(v_ord) > 0 then
    return query
    with t as (
      select p_ids[o.ord] as id, p_tokens[o.ord] as token, p_outcomes[o.ord] as outcome,
             p_errors[o.ord] as error, p_retry_s[o.ord] as retry_s,
             p_collated[o.ord] as collated, p_warnings[o.ord] as warnings,
             o.cur_id, o.cur_version, o.version,
             case
               -- a newer version is already current: this one can never be
               when p_outcomes[o.ord] = 'publish' and o.cur_version > o.version then 'superseded'
               when p_outcomes[o.ord] = 'publish' then 'current'
               when p_outcomes[o.ord] = 'error' then 'errored'
               else 'post-publication'
             end::postpub.state as new_state
        from unnest(v_ord, v_cur, v_cur_version, v_version) as o(ord, cur_id, cur_version, version)
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
                v.run_after, t.outcome, t.error, t.retry_s, t.collated, t.warnings
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
      select postpub._event_id() as event_id, u.id, u.document, u.version, u.published_at,
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
    )
    select u.id, u.state::text from u;
  end if;

  return query select l, 'lost'::text from unnest(coalesce(v_lost, '{}')) as l;
end $$;

-- _rescue(actor, max_attempts): as in 0008, found through the expired claim rows instead
-- of the leases. The triggers clear the processing pointer, requeue, and store the claim
-- that ended before the rescue's own audit row. Then the expired claim rows whose versions
-- no longer carry their token are deleted (a daemon that died leaves them), and those
-- still holding a renewed version wait for its lease.
create or replace function postpub._rescue(p_actor text, p_max_attempts int)
returns table (version_id bigint, document text, state text, held_by text)
language plpgsql
set enable_bitmapscan = off set jit = off as $$
declare
  v_back int;
begin
  return query
  with x as (
    select v.id, v.locked_by
      from postpub.claims c
      cross join lateral unnest(c.version_ids) as i(id)
      join postpub.versions v on v.id = i.id and v.lease_token = c.token
      join postpub.documents d on d.document = v.document
     where c.locked_until < now() and v.state = 'processing' and v.locked_until < now()
       for update of v skip locked
       for no key update of d skip locked
  ), u as (
    update postpub.versions v
       set state = case when v.attempts >= p_max_attempts then 'errored'
                        else 'post-publication' end::postpub.state,
           last_error = format('lease expired while %s held it (attempt %s of %s)',
                               coalesce(x.locked_by, 'a daemon'), v.attempts, p_max_attempts),
           run_after = now(), locked_by = null, locked_until = null, lease_token = null,
           state_changed_at = now(), claimed_at = null, claimed_by = null
      from x
     where v.id = x.id
    returning v.id, v.document, v.state, x.locked_by, v.last_error
  ), t as (
    -- its end (the claim it ends was stored by _store_claim)
    insert into postpub.transition_log (version_id, document, from_state, to_state, by, why)
    select u.id, u.document, 'processing', u.state, p_actor, u.last_error from u
  )
  select u.id, u.document, u.state::text, u.locked_by from u;
  get diagnostics v_back = row_count;

  -- The expired claim rows: gone once no version carries their token any more; otherwise
  -- due again when the earliest lease left among their versions ends. Rows another
  -- transaction holds (a renewal, another rescuer) are left to the next round.
  with e as (
    select c.token, c.version_ids,
           (select min(v.locked_until)
              from unnest(c.version_ids) as i(id)
              join postpub.versions v on v.id = i.id and v.lease_token = c.token) as held_until
      from postpub.claims c
     where c.locked_until < now()
       for update of c skip locked
  ), gone as (
    delete from postpub.claims c using e
     where c.token = e.token and e.held_until is null
  )
  update postpub.claims c
     set locked_until = e.held_until
    from e
   where c.token = e.token and e.held_until is not null;

  if v_back > 0 then
    perform pg_notify('postpub', 'versions');
  end if;
end $$;

-- _renew(ids, tokens, lease): as in 0003_worker, and the claim rows of the tokens still
-- held follow, so the rescuer does not look at them before their versions' leases end.
-- (The daemon renews every version it holds at once, so the batch's earliest lease end is
-- the new one. Should a caller renew only part of a batch, the rest is looked at once this
-- renewal ends: rescued late by at most one lease, never lost.)
create or replace function postpub._renew(p_ids bigint[], p_tokens bigint[], p_lease interval)
returns setof bigint
language sql
set enable_seqscan = off set enable_bitmapscan = off set jit = off
set postpub.internal = on as $$
  with l as (
    select v.id
      from unnest(p_ids, p_tokens) as t(id, token)
      join postpub.versions v on v.id = t.id and v.lease_token = t.token
     order by v.id
       for update of v
  ), u as (
    update postpub.versions v
       set locked_until = now() + p_lease
      from l
     where v.id = l.id
    returning v.id, v.lease_token
  ), c as (
    update postpub.claims c
       set locked_until = greatest(c.locked_until, now() + p_lease)
     where c.token in (select u.lease_token from u)
  )
  select u.id from u;
$$;

-- _release_claims(tokens): the claiming daemon's note that every version of these claims
-- is finished (or was lost); their rows go. A token some version still carries keeps its
-- row: the rescuer needs it should that lease expire.
create function postpub._release_claims(p_tokens bigint[])
returns void
language sql
set enable_seqscan = off set enable_bitmapscan = off set jit = off as $$
  delete from postpub.claims c
   where c.token = any(p_tokens)
     and not exists (select 1
                       from unnest(c.version_ids) as i(id)
                       join postpub.versions v on v.id = i.id and v.lease_token = c.token);
$$;

-- _apply_grants() of 0006, plus the daemon's right to release its claims.
alter function postpub._apply_grants() rename to _apply_grants_0006;
create function postpub._apply_grants() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  perform postpub._apply_grants_0006();
  alter function postpub._release_claims(bigint[])
    security definer set search_path = pg_catalog, pg_temp;
  grant execute on function postpub._release_claims(bigint[]) to postpub_worker;
end $$;

select postpub._apply_grants();
