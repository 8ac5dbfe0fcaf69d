-- 0004_operations: the roles that separate publishing, operating and the daemon, and
-- postpub.capture, the trigger that makes an existing application table a source.
--
-- Roles (cluster-wide, NOLOGIN; grant them to login roles):
--   postpub_publisher  publish(), delete(), and attaching postpub.capture to its tables
--   postpub_operator   read every postpub table and view, requeue errored versions
--   postpub_worker     what `postpub run` needs: read the tables, call the daemon's
--                      claim/finish/renew/rescue and relay functions, LISTEN
-- Everything is a plain GRANT, so a forbidden call fails with SQLSTATE 42501.

-- _apply_grants(): creates the roles when missing and grants each what it needs in this
-- database. Idempotent; `postpub migrate` calls it after every run, so objects added by
-- later migrations are covered without editing this file. It only ever adds privileges
-- (and takes EXECUTE away from PUBLIC): a grant another migration made is never undone.
create function postpub._apply_grants() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  v_role text;
  v_fn regprocedure;
begin
  foreach v_role in array array['postpub_publisher', 'postpub_operator', 'postpub_worker'] loop
    if not exists (select 1 from pg_roles r where r.rolname = v_role) then
      begin
        execute format('create role %I nologin', v_role);
      exception when duplicate_object or unique_violation then
        -- Roles are cluster-wide: a migration of another database created it meanwhile.
        null;
      end;
    end if;
  end loop;

  -- Nothing for PUBLIC: PostgreSQL grants EXECUTE on new functions to everyone.
  revoke all on schema postpub from public;
  revoke all on all tables in schema postpub from public;
  revoke all on all sequences in schema postpub from public;
  revoke execute on all functions in schema postpub from public;

  grant usage on schema postpub to postpub_publisher, postpub_operator, postpub_worker;
  -- Every CLI command and the daemon check the schema version first.
  grant select on postpub.migrations to postpub_publisher, postpub_operator, postpub_worker;

  -- The API functions are SECURITY DEFINER: EXECUTE is the whole permission.
  for v_fn in
    select p.oid::regprocedure from pg_proc p
     where p.pronamespace = 'postpub'::regnamespace
       and p.proname in ('publish', 'delete', 'capture')
  loop
    execute format('grant execute on function %s to postpub_publisher', v_fn);
  end loop;

  grant select on all tables in schema postpub to postpub_operator;
  for v_fn in
    select p.oid::regprocedure from pg_proc p
     where p.pronamespace = 'postpub'::regnamespace and p.proname like 'requeue%'
  loop
    execute format('grant execute on function %s to postpub_operator', v_fn);
  end loop;

  -- The daemon reads everything (bodies, recipes, status, the runtime API) and changes
  -- versions and the outbox only through its functions (claim/finish/renew/rescue and the
  -- relay's), which run as their owner with a fixed search_path. `create or replace`
  -- resets SECURITY DEFINER, hence re-applied each run.
  grant select on all tables in schema postpub to postpub_worker;
  for v_fn in
    select p.oid::regprocedure from pg_proc p
     where p.pronamespace = 'postpub'::regnamespace
       and p.proname in ('_claim', '_finish', '_renew', '_rescue',
                         '_relay_claim', '_relay_record', '_relay_purge')
  loop
    execute format('alter function %s security definer set search_path = pg_catalog, pg_temp',
                   v_fn);
    execute format('grant execute on function %s to postpub_worker', v_fn);
  end loop;
end $$;

-- capture(): an AFTER ... FOR EACH ROW trigger an application attaches to its own table,
-- so that what it writes becomes postpub versions in its own transaction:
--
--   create trigger _500_postpub_capture
--     after insert on app.modules
--     for each row execute function postpub.capture('name', 'content', 'recipe');
--
-- Arguments: the column holding the document name, the column holding the body, then
-- optionally the column holding the CSS recipe ('' for none) and a prefix put before
-- every document name (e.g. 'modules/'). Columns of any type are read as text.
-- INSERT and UPDATE publish the new row (postpub.publish); DELETE publishes a deletion of
-- the old row's document (postpub.delete). A row that cannot be published (null name or
-- body) fails the application's statement, so nothing is silently lost; a rolled-back
-- transaction leaves no version behind.
--
-- SECURITY INVOKER: the role that writes the table calls postpub.publish itself, so it
-- must be a postpub_publisher (and attaching the trigger needs EXECUTE on this function,
-- which only postpub_publisher has).
create function postpub.capture() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  v_table text := format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME);
  v_recipe_col text := nullif(TG_ARGV[2], '');
  v_prefix text := coalesce(TG_ARGV[3], '');
  v_sql text;
  v_doc text;
  v_body text;
  v_recipe text;
begin
  if TG_WHEN <> 'AFTER' or TG_LEVEL <> 'ROW' then
    raise exception 'postpub.capture on %: attach it as an AFTER ... FOR EACH ROW trigger, not % ... FOR EACH %',
      v_table, TG_WHEN, TG_LEVEL using errcode = '39P01';
  end if;
  if TG_NARGS < 2 or TG_NARGS > 4 then
    raise exception 'postpub.capture on %: expects (document column, body column[, recipe column[, document prefix]]), got % arguments',
      v_table, TG_NARGS using errcode = '39P01';
  end if;
  v_sql := format('select ($1).%I::text, ($1).%I::text, %s', TG_ARGV[0], TG_ARGV[1],
                  case when v_recipe_col is null then 'null::text'
                       else format('($1).%I::text', v_recipe_col) end);
  begin
    if TG_OP = 'DELETE' then
      execute v_sql using OLD into v_doc, v_body, v_recipe;
    else
      execute v_sql using NEW into v_doc, v_body, v_recipe;
    end if;
  exception when undefined_column then
    raise exception 'postpub.capture on %: %', v_table, sqlerrm
      using errcode = '42703',
            hint = 'trigger arguments: document column, body column[, recipe column[, document prefix]]';
  end;
  if TG_OP = 'DELETE' then
    perform postpub.delete(v_prefix || v_doc);
  else
    perform postpub.publish(v_prefix || v_doc, v_body, v_recipe);
  end if;
  return null;
end $$;

select postpub._apply_grants();
