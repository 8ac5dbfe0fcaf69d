-- 0002_api: the SQL API that applications and operators call, and the NOTIFY triggers.
--
-- API functions are SECURITY DEFINER with a fixed search_path so that roles can be granted
-- EXECUTE on them without any write privilege on the tables. Every message names the
-- function and the object involved.

-- Content-addressed recipe id; concurrent callers with the same CSS get the same row.
create function postpub._recipe_id(p_css text) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_hash bytea := sha256(convert_to(p_css, 'UTF8'));
  v_id bigint;
begin
  select r.id into v_id from postpub.recipes r where r.sha256 = v_hash;
  if v_id is null then
    insert into postpub.recipes (sha256, css) values (v_hash, p_css)
      on conflict (sha256) do nothing
      returning id into v_id;
    if v_id is null then
      select r.id into v_id from postpub.recipes r where r.sha256 = v_hash;
    end if;
  end if;
  return v_id;
end $$;

-- Next version number of a document; locks the document row until the caller commits.
create function postpub._next_version(p_document text) returns int
language sql security definer set search_path = pg_catalog, pg_temp as $$
  insert into postpub.documents as d (document, last_version) values (p_document, 1)
  on conflict (document) do update set last_version = d.last_version + 1
  returning d.last_version;
$$;

-- publish(document, body, recipe_css): a new version of a document.
-- With a recipe the version waits for the daemon (post-publication); without one it becomes
-- current right here, in the caller's transaction, with its outbox event.
create function postpub.publish(document text, body text, recipe_css text default null)
returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_doc text := publish.document;
  v_body text := publish.body;
  v_recipe bigint;
  v_version int;
  v_id bigint;
  v_live boolean;
  v_actor text := session_user;
begin
  if v_doc is null or btrim(v_doc) = '' then
    raise exception 'postpub.publish: document must be a non-empty name'
      using errcode = '22023';
  end if;
  if v_body is null then
    raise exception 'postpub.publish: body of document "%" must not be null', v_doc
      using errcode = '22004';
  end if;
  v_version := postpub._next_version(v_doc);
  if recipe_css is not null then
    v_recipe := postpub._recipe_id(recipe_css);
    insert into postpub.versions (document, version, body, recipe_id)
      values (v_doc, v_version, v_body, v_recipe)
      returning id into v_id;
    insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
      values (v_id, v_doc, null, 'post-publication', v_actor, 'published with a recipe');
    return v_id;
  end if;

  -- Straight to current. Older pending versions can never become current now.
  with s as (
    update postpub.versions v
       set state = 'superseded', state_changed_at = now()
     where v.document = v_doc and v.state = 'post-publication'
    returning v.id
  )
  insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
  select s.id, v_doc, 'post-publication', 'superseded', v_actor,
         format('version %s was published without a recipe', v_version)
    from s;
  -- The previous current is archived first: the one-current index allows no overlap.
  with a as (
    update postpub.versions v
       set state = 'archived', state_changed_at = now()
     where v.document = v_doc and v.state = 'current'
    returning v.id
  )
  insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
  select a.id, v_doc, 'current', 'archived', v_actor, format('replaced by version %s', v_version)
    from a;
  insert into postpub.versions (document, version, body, state, published_at)
    values (v_doc, v_version, v_body, 'current', now())
    returning id into v_id;
  insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    values (v_id, v_doc, null, 'current', v_actor, 'published without a recipe');
  perform postpub._emit(v_id, v_doc, v_version, 'published');
  return v_id;
end $$;

-- A new event id: a UUID in the version-7 layout (RFC 9562): 48 bits of Unix time in ms,
-- then random bits. Time-ordered ids let consumers sort events, and the unique index on
-- outbox.event_id grows at its right edge instead of touching a random page per event.
create function postpub._event_id() returns uuid
language sql volatile set search_path = pg_catalog, pg_temp as $$
  select encode(
           set_bit(set_bit(  -- version nibble 0111
             overlay(uuid_send(gen_random_uuid())  -- already has the RFC variant bits
                     placing substring(int8send((extract(epoch from clock_timestamp()) * 1000)::bigint)
                                       from 3)
                     from 1 for 6),
             52, 1), 53, 1),
           'hex')::uuid
$$;

-- The outbox event of a version that became current (or deleted its document).
create function postpub._emit(p_version_id bigint, p_document text, p_version int,
                              p_kind postpub.event_kind)
returns uuid
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_event uuid := postpub._event_id();
begin
  insert into postpub.outbox (event_id, document, version_id, kind, payload)
  values (v_event, p_document, p_version_id, p_kind,
          jsonb_build_object('event_id', v_event, 'kind', p_kind, 'document', p_document,
                             'version', p_version, 'version_id', p_version_id,
                             'published_at', now()));
  return v_event;
end $$;

-- delete(document): a tombstone version; the daemon makes it current and emits `deleted`
-- only when a live version was current (a never-published document gets no event).
create function postpub.delete(document text) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_doc text := delete.document;
  v_version int;
  v_id bigint;
begin
  if v_doc is null or btrim(v_doc) = '' then
    raise exception 'postpub.delete: document must be a non-empty name'
      using errcode = '22023';
  end if;
  v_version := postpub._next_version(v_doc);
  insert into postpub.versions (document, version, body, is_tombstone)
    values (v_doc, v_version, '', true)
    returning id into v_id;
  insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    values (v_id, v_doc, null, 'post-publication', session_user, 'deletion requested');
  return v_id;
end $$;

-- requeue(version_id): an errored version back to post-publication with attempts reset.
-- Anything else is refused: requeueing a current or pending version would publish it twice.
create function postpub.requeue(version_id bigint) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_id bigint := requeue.version_id;
  v_state postpub.state;
  v_doc text;
begin
  select v.state, v.document into v_state, v_doc
    from postpub.versions v where v.id = v_id for update;
  if not found then
    raise exception 'postpub.requeue: version % does not exist', v_id using errcode = 'P0002';
  end if;
  if v_state <> 'errored' then
    raise exception 'postpub.requeue: version % of document "%" is %, not errored; only errored versions can be requeued',
      v_id, v_doc, v_state using errcode = '55000';
  end if;
  update postpub.versions v
     set state = 'post-publication', attempts = 0, run_after = now(), last_error = null,
         state_changed_at = now()
   where v.id = v_id;
  insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    values (v_id, v_doc, 'errored', 'post-publication', session_user, 'requeued');
  perform pg_notify('postpub', 'versions');
  return v_id;
end $$;

-- requeue_errored(document): every errored version (of one document, or all) requeued.
create function postpub.requeue_errored(document text default null) returns int
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_doc text := requeue_errored.document;
  v_count int;
begin
  with r as (
    update postpub.versions v
       set state = 'post-publication', attempts = 0, run_after = now(), last_error = null,
           state_changed_at = now()
     where v.state = 'errored' and (v_doc is null or v.document = v_doc)
    returning v.id, v.document
  ), t as (
    insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    select r.id, r.document, 'errored', 'post-publication', session_user, 'requeued'
      from r
  )
  select count(*) into v_count from r;
  if v_count > 0 then
    perform pg_notify('postpub', 'versions');
  end if;
  return v_count;
end $$;

-- Statement-level wake-up hints: one NOTIFY per statement, whatever the row count. The
-- payload says which loop to wake; the daemon always reads the tables.
create function postpub._notify_versions() returns trigger
language plpgsql as $$
begin
  perform pg_notify('postpub', 'versions');
  return null;
end $$;

create function postpub._notify_outbox() returns trigger
language plpgsql as $$
begin
  perform pg_notify('postpub', 'outbox');
  return null;
end $$;

create trigger _900_notify after insert on postpub.versions
  for each statement execute function postpub._notify_versions();
create trigger _900_notify after insert on postpub.outbox
  for each statement execute function postpub._notify_outbox();
