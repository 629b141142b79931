-- One database of a hosted Supabase project, as supabase/postgres's init scripts and migrations, the
-- auth server's migrations (supabase/auth) and the dashboard leave it, plus LocalPlus's own tables
-- made before the engine existed. Run as the superuser `supabase_admin` in each new database, after
-- cluster.sql; the engine's migrations then run as `postgres`.

-- migrate.sh hands the database to postgres; on Postgres 15 that is what lets it create in public.
do $$
begin
  execute format('alter database %I owner to postgres', current_database());
end
$$;
grant usage on schema public to postgres, anon, authenticated, service_role;

-- Everything postgres or supabase_admin creates in public starts fully granted to the API roles.
alter default privileges for role postgres in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema public
  grant all on functions to postgres, anon, authenticated, service_role;

-- Extensions live in their own schema (the init scripts ran as postgres, then still a superuser);
-- pg_trgm is enabled from the dashboard, which puts it there too.
create schema extensions authorization postgres;
grant usage on schema extensions to anon, authenticated, service_role;
alter default privileges in schema extensions grant all on tables to postgres with grant option;
alter default privileges in schema extensions grant all on routines to postgres with grant option;
alter default privileges in schema extensions grant all on sequences to postgres with grant option;
create extension "uuid-ossp" with schema extensions;
create extension pgcrypto with schema extensions;
create extension pg_trgm with schema extensions;

-- auth belongs to supabase_admin and its objects to the auth server's role. postgres may use the schema
-- and read and write auth.users (10000000000000_demote-postgres) but, since 2025, not create in auth
-- (20250421084701_revoke_admin_roles_from_postgres).
create schema auth authorization supabase_admin;
grant usage on schema auth to postgres, anon, authenticated, service_role;
grant all on schema auth to supabase_auth_admin;

set role supabase_auth_admin;

-- auth.users after the auth server's migrations: 35 columns, only id required.
create table auth.users (
  instance_id uuid,
  id uuid not null primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change_token_new varchar(255),
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz,
  updated_at timestamptz,
  phone text unique default null,
  phone_confirmed_at timestamptz,
  phone_change text default '',
  phone_change_token varchar(255) default '',
  phone_change_sent_at timestamptz,
  confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
  email_change_token_current varchar(255) default '',
  email_change_confirm_status smallint default 0
    check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2),
  banned_until timestamptz,
  reauthentication_token varchar(255) default '',
  reauthentication_sent_at timestamptz,
  is_sso_user boolean not null default false,
  deleted_at timestamptz,
  is_anonymous boolean not null default false
);
create unique index users_email_partial_key on auth.users (email) where is_sso_user = false;
create index users_instance_id_idx on auth.users (instance_id);
alter table auth.users enable row level security;
grant all on auth.users to postgres;
grant select on auth.users to postgres with grant option;

-- Supabase's own definitions (20240624145325_recreate_auth_functions): the claims PostgREST sets, or
-- the per-claim settings older PostgREST versions set.
create function auth.uid() returns uuid
  language sql stable
  set search_path to ''
  as $$
    select coalesce(
      nullif(current_setting('request.jwt.claim.sub', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
  $$;
create function auth.role() returns text
  language sql stable
  set search_path to ''
  as $$
    select coalesce(
      nullif(current_setting('request.jwt.claim.role', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
  $$;
create function auth.email() returns text
  language sql stable
  set search_path to ''
  as $$
    select coalesce(
      nullif(current_setting('request.jwt.claim.email', true), ''),
      (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
  $$;
create function auth.jwt() returns jsonb
  language sql stable
  set search_path to ''
  as $$
    select coalesce(
      nullif(current_setting('request.jwt.claim', true), ''),
      nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
  $$;

-- LocalPlus's own tables, made by postgres long before the engine (so the default privileges above
-- apply), with columns the engine does not know, RLS on and a row each.
set role postgres;

create table public.businesses (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  slug text unique,
  owner_id uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now()
);
alter table public.businesses enable row level security;
create policy "Businesses are public" on public.businesses for select using (true);

create table public.partners (
  id uuid primary key default gen_random_uuid(),
  business_id uuid references public.businesses (id) on delete cascade,
  user_id uuid references auth.users (id) on delete cascade,
  role text not null check (role in ('owner', 'editor', 'viewer')),
  invited_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  unique (business_id, user_id)
);
alter table public.partners enable row level security;
create policy "Partners see their own rows" on public.partners for select to authenticated
  using (user_id = (select auth.uid()));

insert into auth.users (instance_id, id, aud, role, email, email_confirmed_at, raw_app_meta_data,
                        raw_user_meta_data, created_at, updated_at)
values ('00000000-0000-0000-0000-000000000000', 'a0000000-0000-4000-8000-000000000001', 'authenticated',
        'authenticated', 'owner@old-town-bakery.example', now() - interval '1 year',
        '{"provider": "email", "providers": ["email"]}', '{}', now() - interval '1 year', now());
insert into public.businesses (id, name, slug, owner_id)
values ('b0000000-0000-4000-8000-000000000001', 'Old Town Bakery', 'old-town-bakery',
        'a0000000-0000-4000-8000-000000000001');
insert into public.partners (business_id, user_id, role)
values ('b0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000001', 'owner');

reset role;
