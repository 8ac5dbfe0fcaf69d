-- 0001_schema: tables, states, invariants and the read view of postpub.
--
-- Hot rows stay narrow: the body of a version is written once and TOASTed when large, the
-- collation output lives in its own table, and the audit trail is append-only.

create type postpub.state as enum (
  'post-publication',  -- waiting to be claimed
  'processing',        -- claimed by a daemon that holds a lease on it
  'current',           -- the one live version of its document
  'errored',           -- failed; waits for an operator (postpub.requeue)
  'superseded',        -- a newer version of the document was published first
  'archived'           -- was current, replaced by a newer current version
);

create type postpub.event_kind as enum ('published', 'deleted');

-- One row per document: hands out version numbers and is the per-document lock that
-- serialises publishing, claiming and finishing (row lock, never held across work).
-- Document names are identifiers, compared for equality and never sorted for people, so
-- every `document` column uses the "C" collation: index probes compare bytes instead of
-- going through the locale's strcoll (most of the per-version CPU is such probes).
create table postpub.documents (
  document     text collate "C" primary key check (document <> ''),
  last_version int not null,
  created_at   timestamptz not null default now()
);

-- Recipes are content-addressed so a version keeps exactly the CSS it was published with.
create table postpub.recipes (
  id         bigint generated always as identity primary key,
  sha256     bytea not null unique,
  css        text not null,
  created_at timestamptz not null default now()
);

create table postpub.versions (
  id               bigint generated always as identity primary key,
  document         text collate "C" not null references postpub.documents (document),
  version          int not null,
  body             text not null,
  recipe_id        bigint references postpub.recipes (id),
  is_tombstone     boolean not null default false,
  state            postpub.state not null default 'post-publication',
  attempts         int not null default 0,
  last_error       text,
  run_after        timestamptz not null default now(),
  locked_by        text,          -- daemon holding the lease
  locked_until     timestamptz,   -- lease expiry; renewed while the pipeline runs
  lease_token      bigint,        -- fencing token: random, chosen by the claiming daemon
  created_at       timestamptz not null default now(),
  state_changed_at timestamptz not null default now(),
  published_at     timestamptz,
  unique (document, version),
  -- The fencing token exists exactly while a version is processing, so "still ours" is
  -- `lease_token = token`, an equality the planner can always drive by primary key.
  constraint versions_lease_only_while_processing
    check ((state = 'processing') = (lease_token is not null))
);

-- The database, not the daemon, guarantees one current and one processing version.
create unique index versions_one_current on postpub.versions (document) where state = 'current';
create unique index versions_one_processing on postpub.versions (document) where state = 'processing';
-- The claim scans pending work oldest first, then looks at each document's pending versions.
create index versions_pending on postpub.versions (run_after, id) where state = 'post-publication';
create index versions_pending_document on postpub.versions (document, version)
  where state = 'post-publication';
create index versions_errored on postpub.versions (document) where state = 'errored';

create table postpub.collated (
  version_id bigint primary key references postpub.versions (id) on delete cascade,
  content    text not null,
  warnings   text[] not null default '{}',
  created_at timestamptz not null default now()
);

-- Written in the same transaction that makes a version current; delivered by the relay.
create table postpub.outbox (
  id              bigint generated always as identity primary key,  -- per-document order
  event_id        uuid not null unique,
  document        text collate "C" not null,
  -- No foreign key: events are only written by postpub's functions next to the version
  -- they announce, and the key check would lock each version row once more per publish.
  version_id      bigint not null,
  kind            postpub.event_kind not null,
  payload         jsonb not null,
  created_at      timestamptz not null default now(),
  delivered_at    timestamptz,
  attempts        int not null default 0,
  last_error      text,
  next_attempt_at timestamptz not null default now(),
  parked_at       timestamptz    -- a sink refused it permanently; an operator requeues it
);
create index outbox_undelivered on postpub.outbox (document, id) where delivered_at is null;
create index outbox_delivered on postpub.outbox (delivered_at) where delivered_at is not null;

-- Append-only audit of every state change (and of each version's creation).
create table postpub.transitions (
  id         bigint generated always as identity primary key,
  version_id bigint not null,
  document   text collate "C" not null,
  from_state postpub.state,      -- null when the version was created
  to_state   postpub.state not null,
  at         timestamptz not null default now(),
  by         text not null,
  why        text
);
create index transitions_version on postpub.transitions (version_id);

-- One row per live (not deleted) document with its current content.
create view postpub.current as
select v.document,
       v.id                       as version_id,
       v.version,
       v.published_at,
       v.recipe_id,
       coalesce(c.content, v.body) as content,
       c.version_id is not null    as collated
  from postpub.versions v
  left join postpub.collated c on c.version_id = v.id
 where v.state = 'current' and not v.is_tombstone;
