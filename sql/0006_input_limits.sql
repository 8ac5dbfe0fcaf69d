-- 0006_input_limits: what postpub.publish, postpub.delete (and so postpub.capture) refuse
-- at the door, each with a message of our own naming the function, the document and the
-- limit, instead of a raw PostgreSQL error or a version nobody can use:
--   * a document name that is empty or only whitespace (any Unicode white space, not just
--     the ASCII space btrim() strips by default), SQLSTATE 22023;
--   * a document name longer than 1024 bytes (UTF-8), SQLSTATE 22023. Names key an index,
--     appear in NATS subjects (escaped, up to three times longer) and in URLs; PostgreSQL
--     itself fails past ~2700 bytes with "index row requires N bytes";
--   * a body larger than postpub.settings.max_body_bytes when it is published without a
--     recipe, SQLSTATE 54000. Such a version becomes current inside publish(), so no
--     daemon ever sees it to check `pipeline.max_body_bytes`; the daemon writes its limit
--     here (`postpub migrate` and `postpub run` do, from the configuration), and versions
--     with a recipe are still checked by the daemon, which errors them with the reason.
--
-- publish() and delete() are replaced (same signatures, so grants and postpub.capture
-- stay as they are); only their checks differ from 0002_api.

-- Limits the daemon configures; exactly one row.
create table postpub.settings (
  only_row       boolean primary key default true check (only_row),
  -- pipeline.max_body_bytes of the daemon that last started (or migrated).
  max_body_bytes bigint not null check (max_body_bytes > 0),
  updated_at     timestamptz not null default now(),
  updated_by     text not null default session_user
);
insert into postpub.settings (max_body_bytes) values (33554432);

-- _set_max_body_bytes(bytes): called by `postpub run` and `postpub migrate`. Writes only
-- when the value changes, so daemons restarting with the same configuration add no churn.
create function postpub._set_max_body_bytes(p_bytes bigint) returns void
language sql security definer set search_path = pg_catalog, pg_temp as $$
  update postpub.settings s
     set max_body_bytes = p_bytes, updated_at = now(), updated_by = session_user
   where s.max_body_bytes is distinct from p_bytes;
$$;

-- _check_document(function, document): refuses names no reader could use.
create function postpub._check_document(p_function text, p_document text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  -- Unicode White_Space, plus the zero-width spaces and the BOM that render as nothing.
  if p_document is null
     or btrim(p_document, E' \t\n\r\v\f\u0085\u00a0\u1680\u180e\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u2028\u2029\u202f\u205f\u3000\ufeff') = '' then
    raise exception '%: document must be a non-empty name (not only white space)', p_function
      using errcode = '22023';
  end if;
  if octet_length(p_document) > 1024 then
    raise exception '%: document name is % bytes long, more than the maximum of 1024 bytes (it begins "%")',
      p_function, octet_length(p_document), left(p_document, 40)
      using errcode = '22023';
  end if;
end $$;

-- publish(document, body, recipe_css): as in 0002_api, with the checks above.
create or replace function postpub.publish(document text, body text, recipe_css text default null)
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
  v_limit bigint;
begin
  perform postpub._check_document('postpub.publish', v_doc);
  if v_body is null then
    raise exception 'postpub.publish: body of document "%" must not be null', v_doc
      using errcode = '22004';
  end if;
  if recipe_css is null then
    select s.max_body_bytes into v_limit from postpub.settings s;
    if octet_length(v_body) > v_limit then
      raise exception 'postpub.publish: body of document "%" is % bytes, more than the % bytes allowed (pipeline.max_body_bytes)',
        v_doc, octet_length(v_body), v_limit
        using errcode = '54000';
    end if;
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

-- delete(document): as in 0002_api, with the name checks above.
create or replace function postpub.delete(document text) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_doc text := delete.document;
  v_version int;
  v_id bigint;
begin
  perform postpub._check_document('postpub.delete', v_doc);
  v_version := postpub._next_version(v_doc);
  insert into postpub.versions (document, version, body, is_tombstone)
    values (v_doc, v_version, '', true)
    returning id into v_id;
  insert into postpub.transitions (version_id, document, from_state, to_state, by, why)
    values (v_id, v_doc, null, 'post-publication', session_user, 'deletion requested');
  return v_id;
end $$;

-- _apply_grants() of 0004_operations, plus the daemon's right to set its limits.
alter function postpub._apply_grants() rename to _apply_grants_0004;
create function postpub._apply_grants() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  perform postpub._apply_grants_0004();
  grant execute on function postpub._set_max_body_bytes(bigint) to postpub_worker;
end $$;

select postpub._apply_grants();
