-- Whether a business exists, for the checks that answer 404 for an unknown one: its public calendar
-- feeds (anonymous callers) and its partners' figures. `businesses` is LocalPlus's own table, whose
-- row-level security is not the engine's (on Supabase it may hide rows from `anon`, or from anyone who
-- is not the business's owner), so reading it as the caller could call a real business unknown. This
-- answers that one bit and nothing else about the row; anyone who knows a business's id may ask.
create or replace function localplus_private.business_exists(p_business_id uuid) returns boolean
  language sql stable security definer
  set search_path = ''
  as $$
    select exists (select 1 from public.businesses b where b.id = p_business_id)
  $$;

revoke all on function localplus_private.business_exists(uuid) from public;
grant execute on function localplus_private.business_exists(uuid) to anon, authenticated, service_role;
