-- Supabase shim: the roles, `auth` schema and placeholder tables this engine relies on.
-- Everything is created only where missing, so on a real Supabase project this file changes nothing.

do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
    -- As on Supabase: the backend's own role skips row-level security.
    create role service_role nologin noinherit bypassrls;
  end if;
  -- The connecting role switches into these per request (`set local role`), as PostgREST does.
  if not pg_catalog.pg_has_role(current_user, 'anon', 'member') then
    execute format('grant anon to %I', current_user);
  end if;
  if not pg_catalog.pg_has_role(current_user, 'authenticated', 'member') then
    execute format('grant authenticated to %I', current_user);
  end if;
  if not pg_catalog.pg_has_role(current_user, 'service_role', 'member') then
    execute format('grant service_role to %I', current_user);
  end if;
end
$$;

-- Guarded rather than `if not exists`: on Supabase, `postgres` may not create in `auth` (since April
-- 2025), and `create ... if not exists` checks that right before looking.
do $$
begin
  if to_regnamespace('auth') is null then
    create schema auth;
    grant usage on schema auth to anon, authenticated, service_role;
  end if;
  if to_regclass('auth.users') is null then
    create table auth.users (
      id uuid primary key,
      email text,
      raw_app_meta_data jsonb default '{}'::jsonb,
      created_at timestamptz default now()
    );
  end if;
end
$$;

do $$
begin
  -- After a request transaction ends the settings read as '' rather than NULL, hence nullif.
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
      language sql stable
      as $f$
        select coalesce(
          nullif(current_setting('request.jwt.claim', true), ''),
          nullif(current_setting('request.jwt.claims', true), '')
        )::jsonb
      $f$;
  end if;
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
      language sql stable
      as $f$
        select coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
      $f$;
  end if;
  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text
      language sql stable
      as $f$
        select coalesce(
          nullif(current_setting('request.jwt.claim.role', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
        )::text
      $f$;
  end if;
end
$$;

do $$
begin
  if to_regclass('public.businesses') is null then
    create table public.businesses (
      id uuid primary key default gen_random_uuid(),
      name text not null,
      created_at timestamptz not null default now()
    );
    alter table public.businesses enable row level security;
    create policy businesses_read on public.businesses for select to anon, authenticated using (true);
    grant select on public.businesses to anon, authenticated;
    grant all on public.businesses to service_role;
  end if;
  if to_regclass('public.partners') is null then
    create table public.partners (
      id uuid primary key default gen_random_uuid(),
      business_id uuid references public.businesses (id) on delete cascade,
      user_id uuid references auth.users (id) on delete cascade,
      role text not null check (role in ('owner', 'editor', 'viewer')),
      created_at timestamptz not null default now(),
      unique (business_id, user_id)
    );
    create index partners_user_id_idx on public.partners (user_id);
    alter table public.partners enable row level security;
    create policy partners_read_own on public.partners for select to authenticated
      using (user_id = (select auth.uid()));
    grant select on public.partners to authenticated;
    grant all on public.partners to service_role;
  end if;
end
$$;
