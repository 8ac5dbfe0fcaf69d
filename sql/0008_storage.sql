-- 0008_storage: a storage layout for throughput (issue 15).
--
-- Before, every claim and every finish rewrote a version row whose `state` appeared in the
-- predicates of five partial indexes (one current, one processing, pending, pending per
-- document, errored). An update that touches a column an index depends on cannot be HOT, so
-- each state change inserted a new entry into every index of the table, the text-keyed
-- unique ones with a heap check each: index insertion was the largest part (about a third)
-- of PostgreSQL's time in a drain.
--
-- Now no index of `versions` depends on a column the hot path changes, and the table keeps
-- room on its pages, so a claim and a finish each rewrite the row in place (HOT) when the
-- page has room. What the partial indexes did moves to narrow rows of their own:
--   * documents.current_id / current_version: the one current version of a document, a
--     pointer (one column: at most one current by construction). Publishing moves it.
--   * postpub.queue: one row per post-publication version (what the claim scans, oldest
--     first, and per document); inserted when a version becomes pending, deleted when it is
--     claimed or superseded.
--   * postpub.leases: one row per processing version with its lease expiry, keyed by the
--     document (at most one processing version per document: a primary key); inserted by
--     the claim, deleted by the finish, scanned by the rescuer.
--   * versions_with_error: versions with a last error (errored ones among them), an index
--     on a column the happy path leaves alone.
--
-- `versions.state` stays what operators read and filter on; the SQL API and the views are
-- unchanged.
--
-- The audit trail (postpub.transitions) shows the same rows as before, but the happy path
-- of a version, claimed then published, is no longer two stored rows: it is read off the
-- version row (claimed_at/claimed_by, published_at/published_by). Everything else (creation,
-- supersede, archive, errors, retries, releases, rescues, requeues) is stored as before, in
-- postpub.transition_log; postpub.transitions is a view of both.
--
-- Who keeps the narrow rows in step with `versions`:
--   * The claim and the finish (postpub._claim, postpub._finish) write them in the same
--     statements as the version rows. They run with `postpub.internal = on`.
--   * Anything else that writes `versions` (publish, delete, requeue, the rescuer, an
--     operator's UPDATE) is followed by the triggers below, which move the pointer, the
--     queue and the leases, and refuse a second current or processing version of a
--     document (SQLSTATE 23505) exactly as the unique indexes did. They do not run inside
--     the claim and the finish, so the hot path pays nothing for them.

-- 1. The pointer, filled from the current versions.
alter table postpub.documents
  add column current_id bigint,
  add column current_version int,
  set (fillfactor = 50);  -- room for the pointer updates to stay on the page (HOT; see below)

update postpub.documents d
   set current_id = v.id, current_version = v.version
  from postpub.versions v
 where v.document = d.document and v.state = 'current';

-- 2. The queue of pending versions.
create table postpub.queue (
  version_id bigint primary key,
  document   text collate "C" not null,
  version    int not null,
  run_after  timestamptz not null
);
-- The claim's scan, oldest first; and each document's pending versions, newest first.
create index queue_due on postpub.queue (run_after, version_id);
create index queue_document on postpub.queue (document, version);
insert into postpub.queue (version_id, document, version, run_after)
select v.id, v.document, v.version, v.run_after
  from postpub.versions v
 where v.state = 'post-publication';

-- 3. The leases of processing versions (the fencing token stays on the version row).
create table postpub.leases (
  document     text collate "C" primary key,
  version_id   bigint not null,
  locked_until timestamptz not null
);
insert into postpub.leases (document, version_id, locked_until)
select v.document, v.id, coalesce(v.locked_until, now())
  from postpub.versions v
 where v.state = 'processing';
-- Both narrow tables see a row come and go per version: vacuumed after a fixed number of
-- dead rows rather than a fraction of a table that is small between bursts.
alter table postpub.queue set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
alter table postpub.leases set (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);

-- 4. No index of versions depends on `state` any more; room for HOT updates.
drop index postpub.versions_one_current;
drop index postpub.versions_one_processing;
drop index postpub.versions_pending;
drop index postpub.versions_pending_document;
drop index postpub.versions_errored;
-- Errored versions always carry their reason; retried ones carry theirs until they are
-- published. The happy path never changes last_error (null stays null), so it stays HOT.
create index versions_with_error on postpub.versions (document) where last_error is not null;
-- Half of each new page stays free: a claim or a finish of a batch rewrites rows that were
-- published together, so neighbours on a page, and each new row version must fit on its
-- own page to be HOT (at 80 a quarter of the drain's updates were, at 50 two thirds; the
-- table's pages are half full, bodies over ~2 kB are out of line in TOAST anyway).
alter table postpub.versions set (fillfactor = 50);

-- 5. The audit trail: stored rows plus the happy path read off the version rows.
alter table postpub.transitions rename to transition_log;
alter index postpub.transitions_pkey rename to transition_log_pkey;
alter index postpub.transitions_version rename to transition_log_version;
alter table postpub.versions
  add column claimed_at timestamptz,  -- the claim in progress or the one that published it
  add column claimed_by text,
  add column published_by text;       -- who made it current, when the daemon did

-- Every state change of every version. Derived rows have no id: order a version's rows by
-- `at`, then `id` (a derived row is never in the same transaction as another change of its
-- version). A claim that ends in anything but a publish is stored when it ends (see
-- _store_claim below), so a version's claims all appear, once each.
create view postpub.transitions as
select l.id, l.version_id, l.document, l.from_state, l.to_state, l.at, l.by, l.why
  from postpub.transition_log l
union all
select null::bigint, v.id, v.document, 'post-publication'::postpub.state,
       'processing'::postpub.state, v.claimed_at, v.claimed_by,
       'claimed, attempt ' || v.attempts
  from postpub.versions v
 where v.claimed_at is not null
union all
select null::bigint, v.id, v.document, 'processing'::postpub.state, 'current'::postpub.state,
       v.published_at, v.published_by,
       case when v.is_tombstone then 'document deleted' else 'published' end
  from postpub.versions v
 where v.published_by is not null;

-- Rows written to the view are stored (the functions of earlier migrations write there).
create rule transitions_insert as on insert to postpub.transitions do instead
  insert into postpub.transition_log (version_id, document, from_state, to_state, at, by, why)
  values (new.version_id, new.document, new.from_state, new.to_state, coalesce(new.at, now()),
          new.by, new.why);

-- _store_claim(): the claim recorded on a version row (claimed_at) is about to be cleared
-- or replaced: store it first, so it stays in postpub.transitions and comes before the
-- row that ends it. One mechanism for every writer: a finish other than a publish, the
-- rescuer, an operator's UPDATE. It never fires for a claim (claimed_at was null) or a
-- publish (claimed_at stays).
create function postpub._store_claim() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  insert into postpub.transition_log (version_id, document, from_state, to_state, at, by, why)
  values (OLD.id, OLD.document, 'post-publication', 'processing', OLD.claimed_at,
          OLD.claimed_by, 'claimed, attempt ' || OLD.attempts);  -- as the view shows it
  return NEW;
end $$;
create trigger _100_store_claim before update on postpub.versions
  for each row
  when (OLD.claimed_at is not null and NEW.claimed_at is distinct from OLD.claimed_at)
  execute function postpub._store_claim();

-- 6. The triggers that keep the narrow rows in step for every writer but the hot path.

-- New pending versions (publish with a recipe, delete, a bulk insert) join the queue: one
-- statement for the whole insert.
create function postpub._queue_inserted() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  insert into postpub.queue (version_id, document, version, run_after)
  select n.id, n.document, n.version, n.run_after
    from new_versions n
   where n.state = 'post-publication';
  return null;
end $$;

-- _sync_version(): a version written outside the claim and the finish: leave the narrow
-- rows of its old state, enter those of its new one. Becoming current or processing while
-- the document's pointer holds another version is refused like a unique violation.
create function postpub._sync_version() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  v_old postpub.state := case when TG_OP = 'UPDATE' then OLD.state end;
  v_holder bigint;
begin
  if v_old is distinct from NEW.state then
    if v_old = 'post-publication' then
      delete from postpub.queue q where q.version_id = OLD.id;
    elsif v_old = 'processing' then
      delete from postpub.leases l where l.document = OLD.document and l.version_id = OLD.id;
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
      insert into postpub.leases (document, version_id, locked_until)
      values (NEW.document, NEW.id, coalesce(NEW.locked_until, now()))
      on conflict (document) do nothing
      returning version_id into v_holder;
      if v_holder is null then
        raise exception 'document "%" already has a processing version (id %); version % cannot be processing too',
          NEW.document, (select l.version_id from postpub.leases l where l.document = NEW.document), NEW.id
          using errcode = '23505', constraint = 'leases_pkey';
      end if;
    else
      update postpub.leases l set locked_until = coalesce(NEW.locked_until, now())
       where l.document = NEW.document and l.version_id = NEW.id;
    end if;
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

-- _unsync_version(): a version row deleted by hand leaves no pointer, queue row or lease.
create function postpub._unsync_version() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  delete from postpub.queue q where q.version_id = OLD.id;
  delete from postpub.leases l where l.document = OLD.document and l.version_id = OLD.id;
  update postpub.documents d set current_id = null, current_version = null
   where d.document = OLD.document and d.current_id = OLD.id;
  return null;
end $$;

create trigger _100_queue after insert on postpub.versions
  referencing new table as new_versions
  for each statement execute function postpub._queue_inserted();
create trigger _100_sync_insert after insert on postpub.versions
  for each row
  when (NEW.state in ('current', 'processing')
        and current_setting('postpub.internal', true) is distinct from 'on')
  execute function postpub._sync_version();
create trigger _100_sync_update after update on postpub.versions
  for each row
  when ((OLD.state is distinct from NEW.state or OLD.run_after is distinct from NEW.run_after
         or OLD.locked_until is distinct from NEW.locked_until)
        and current_setting('postpub.internal', true) is distinct from 'on')
  execute function postpub._sync_version();
create trigger _100_unsync after delete on postpub.versions
  for each row execute function postpub._unsync_version();

-- 7. _event_id() without a SET clause, so that it is inlined into the statements that call
-- it. With one, every call saved and restored the GUC state (9 µs per event, measured: more
-- than the insert of the event itself). Its body names only pg_catalog functions, which
-- are found first whatever the search_path. The time comes from date_part (float) rather
-- than extract (numeric), the same milliseconds for a fifth of the cost.
create or replace function postpub._event_id() returns uuid
language sql volatile as $$
  select encode(
           set_bit(set_bit(  -- version nibble 0111
             overlay(uuid_send(gen_random_uuid())  -- already has the RFC variant bits
                     placing substring(int8send((date_part('epoch', clock_timestamp()) * 1000)::bigint)
                                       from 3)
                     from 1 for 6),
             52, 1), 53, 1),
           'hex')::uuid
$$;

-- 8. The current view reads the pointer.
create or replace view postpub.current as
select v.document,
       v.id                       as version_id,
       v.version,
       v.published_at,
       v.recipe_id,
       coalesce(c.content, v.body) as content,
       c.version_id is not null    as collated
  from postpub.documents d
  join postpub.versions v on v.id = d.current_id
  left join postpub.collated c on c.version_id = v.id
 where not v.is_tombstone;

-- 9. The hot path. Same signatures and results as in 0003_worker (the daemon's queries do
-- not change); see there for the locking protocol, which is the same: the documents row is
-- the per-document lock, taken with SKIP LOCKED, then the document's rows are read in a new
-- statement.

-- _claim(actor, limit, lease, token): claim up to `limit` versions, one per document, the
-- newest pending one; older pending versions of those documents become superseded.
create or replace function postpub._claim(p_actor text, p_limit int, p_lease interval,
                                          p_token bigint default null)
returns table (version_id bigint, document text, version int, is_tombstone boolean,
               recipe_id bigint, attempts int, lease_token bigint, body_bytes int,
               created_at timestamptz)
language plpgsql
set enable_seqscan = off set enable_bitmapscan = off set jit = off
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
           where q.run_after <= now()
             and not exists (select 1 from postpub.leases l where l.document = q.document)
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
                 (select p.version from postpub.leases l
                    join postpub.versions p on p.id = l.version_id
                   where l.document = x.document) as processing
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
  ), ls as (
    insert into postpub.leases (document, version_id, locked_until)
    select cl.document, cl.id, now() + p_lease from cl
  )
  select cl.id, cl.document, cl.version, cl.is_tombstone, cl.recipe_id, cl.attempts,
         cl.lease_token, cl.body_bytes, cl.created_at
    from cl;
end $$;

-- _finish(actor, ids, tokens, outcomes, errors, retry_s, collated, warnings): as in
-- 0003_worker, in two statements: one locks the documents and reads, under the lock, each
-- document's current version from its pointer; the other writes everything (the previous
-- current archived, the version's new state, the pointer, the lease, the queue row for a
-- retry or a release, the collated output, the outbox event, the audit). A publish stores
-- no audit row (published_by is its row); any other outcome clears claimed_at, so the
-- claim it ends is stored (_store_claim), then itself.
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
      update postpub.documents d
         set current_id = u.id, current_version = u.version
        from u
       where d.document = u.document and u.state = 'current'
    ), dl as (
      delete from postpub.leases l
       using u
       where l.document = u.document and l.version_id = u.id
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

-- _rescue(actor, max_attempts): as in 0003_worker, found through the leases instead of an
-- index on the state. The triggers above move the pointer, the lease and the queue row, and
-- store the claim that ended before the rescue's own audit row.
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
      from postpub.leases l
      join postpub.versions v on v.id = l.version_id
      join postpub.documents d on d.document = v.document
     where l.locked_until < now() and v.state = 'processing' and v.locked_until < now()
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
  if v_back > 0 then
    perform pg_notify('postpub', 'versions');
  end if;
end $$;

select postpub._apply_grants();
