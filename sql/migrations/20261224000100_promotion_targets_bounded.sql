-- A promotion's cities and categories were bounded in count by the table but in length only by the
-- ticketing service (MAX_TARGET_LENGTH), so a partner writing through Supabase's REST could store
-- entries of any length, or empty and null ones, which every sponsored search then loads and compares.
-- Now the table holds each entry to 1-64 characters too, as the service does.
create or replace function localplus_private.are_targets(p_targets text[]) returns boolean
  language sql immutable
  set search_path = ''
  as $$
    select not exists (select 1 from pg_catalog.unnest(p_targets) t
                        where t is null or pg_catalog.char_length(t) not between 1 and 64)
  $$;

-- A table check runs with the writer's privileges: a pure function of its argument, for everyone.
revoke all on function localplus_private.are_targets(text[]) from public;
grant execute on function localplus_private.are_targets(text[]) to anon, authenticated, service_role;

-- Not validated against existing rows (the service began checking lengths only in the previous
-- release, and a failed validation would stop the migration); every write from now on is checked.
alter table public.promotions drop constraint if exists promotions_cities_are_targets,
  add constraint promotions_cities_are_targets check (localplus_private.are_targets(cities)) not valid;
alter table public.promotions drop constraint if exists promotions_categories_are_targets,
  add constraint promotions_categories_are_targets check (localplus_private.are_targets(categories)) not valid;
