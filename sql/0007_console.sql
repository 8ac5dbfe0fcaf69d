-- 0007_console: what the operator console (issue 16) needs from the database: an audit of
-- the actions people take there (with who took them), requeue functions that record that
-- person, and the one index its document page reads by.
--
-- The console runs inside the daemon on the daemon's connections, so the database role of
-- every action is the daemon's; `actor` is the console user (or "local" on loopback),
-- which only the console knows. Each function writes both into the audit trail:
-- `transitions.by` becomes 'console:<actor> as <session_user>'.

-- One row per console action (a requeue of one version, of a selection, of everything
-- matching a filter, of a parked event). Append-only.
create table postpub.audit (
  id       bigint generated always as identity primary key,
  at       timestamptz not null default now(),
  actor    text not null,   -- 'console:<user> as <database role>'
  action   text not null,   -- requeue_versions, requeue_matching, requeue_event
  target   text not null,   -- version ids, the filter, or the event id
  affected int not null     -- rows changed
);
create index audit_at on postpub.audit (at);

-- The document page lists a document's outbox events, delivered ones included; the
-- existing outbox indexes cover only undelivered events and delivery times.
create index outbox_document on postpub.outbox (document, id);

-- _console_actor(actor): the name written into the audit for a console user.
create function postpub._console_actor(p_actor text) returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
  select format('console:%s as %s', coalesce(nullif(p_actor, ''), 'unknown'), session_user)
$$;

-- requeue_versions(ids, actor): the errored versions among `ids` back to post-publication
-- with attempts reset; ids in any other state are left alone (a page can be stale).
-- Returns the ids requeued.
create function postpub.requeue_versions(ids bigint[], actor text)
returns table (id bigint)
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_by text := postpub._console_actor(requeue_versions.actor);
  v_ids bigint[];
begin
  with r as (
    update postpub.versions v
       set state = 'post-publication', attempts = 0, run_after = now(), last_error = null,
           state_changed_at = now()
     where v.id = any(requeue_versions.ids) and v.state = 'errored'
    returning v.id, v.document
  ), t as (
    insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    select r.id, r.document, 'errored', 'post-publication', v_by, 'requeued from the console'
      from r
  )
  select coalesce(array_agg(r.id order by r.id), '{}') into v_ids from r;
  insert into postpub.audit (actor, action, target, affected)
    values (v_by, 'requeue_versions', array_to_string(requeue_versions.ids, ','),
            cardinality(v_ids));
  if cardinality(v_ids) > 0 then
    perform pg_notify('postpub', 'versions');
  end if;
  return query select unnest(v_ids);
end $$;

-- requeue_matching(prefix, since, until, actor): every errored version whose document
-- starts with `prefix` ('' = any) and that was created in [since, until) (null = open),
-- requeued. Returns how many.
create function postpub.requeue_matching(prefix text, since timestamptz, until timestamptz,
                                         actor text)
returns int
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_by text := postpub._console_actor(requeue_matching.actor);
  v_prefix text := coalesce(requeue_matching.prefix, '');
  v_count int;
begin
  with r as (
    update postpub.versions v
       set state = 'post-publication', attempts = 0, run_after = now(), last_error = null,
           state_changed_at = now()
     where v.state = 'errored'
       and starts_with(v.document, v_prefix)
       and (requeue_matching.since is null or v.created_at >= requeue_matching.since)
       and (requeue_matching.until is null or v.created_at < requeue_matching.until)
    returning v.id, v.document
  ), t as (
    insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    select r.id, r.document, 'errored', 'post-publication', v_by, 'requeued from the console'
      from r
  )
  select count(*) into v_count from r;
  insert into postpub.audit (actor, action, target, affected)
    values (v_by, 'requeue_matching',
            format('errored, document prefix %L, created from %s until %s', v_prefix,
                   coalesce(requeue_matching.since::text, 'any time'),
                   coalesce(requeue_matching.until::text, 'now')),
            v_count);
  if v_count > 0 then
    perform pg_notify('postpub', 'versions');
  end if;
  return v_count;
end $$;

-- requeue_event_by(event_id, actor): postpub.requeue_event with the console user recorded.
create function postpub.requeue_event_by(event_id uuid, actor text) returns uuid
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform postpub.requeue_event(requeue_event_by.event_id);
  insert into postpub.audit (actor, action, target, affected)
    values (postpub._console_actor(requeue_event_by.actor), 'requeue_event',
            requeue_event_by.event_id::text, 1);
  return requeue_event_by.event_id;
end $$;

select postpub._apply_grants();
