-- The roles of a hosted Supabase project, as supabase/postgres's init scripts and migrations leave
-- them (migrations/db: 00000000000000-initial-schema, 10000000000000_demote-postgres,
-- 20230201083204_grant_auth_roles_to_postgres, 20230529180330_alter_api_roles_for_inherit, ...).
-- Run once per cluster as its superuser `supabase_admin` (initdb -U supabase_admin); roles are
-- cluster-wide, so database.sql shapes each database separately.

-- What projects (and this engine's migrations) connect as: no superuser, but it skips RLS.
create role postgres nosuperuser createdb createrole login replication bypassrls password 'postgres';
alter role postgres set search_path = "$user", public, extensions;
grant pg_read_all_data, pg_signal_backend, pg_monitor to postgres;

-- The API roles PostgREST switches into; INHERIT since 2023.
create role anon nologin inherit;
create role authenticated nologin inherit;
create role service_role nologin inherit bypassrls;
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
grant anon, authenticated, service_role to postgres;

-- PostgREST logs in as authenticator and may only become one of the API roles.
create role authenticator login noinherit password 'postgres';
grant anon, authenticated, service_role to authenticator;
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';

-- The auth server's role: it owns auth's tables and functions. No longer granted to postgres (2024).
create role supabase_auth_admin login noinherit noreplication password 'postgres';
alter role supabase_auth_admin set search_path = auth;

alter role supabase_admin set search_path = "$user", public, auth, extensions;
