-- A time zone is a zone's name. `AT TIME ZONE` also takes abbreviations ("PST", "CEST", "Z"), which no
-- zone database has: an event given one through Supabase's REST (the API refuses them) made every
-- Python reader of it fail, the notifications worker and the city and business calendar feeds among
-- them. Names with a slash are zones (no abbreviation has one) and keep the quick check; the few
-- without one ("UTC", "EST") must be in the zone list. Rows written before keep their value.
create or replace function public.is_valid_timezone(tz text) returns boolean
  language plpgsql immutable
  set search_path = ''
  as $$
begin
  -- Only IANA names ("Asia/Bangkok", "UTC"), not POSIX offsets such as "XYZ+3".
  if tz is null or tz !~ '^[A-Za-z][A-Za-z_]*(/[A-Za-z0-9_+-]+)*$' then
    return false;
  end if;
  if strpos(tz, '/') = 0 then
    return exists (select 1 from pg_catalog.pg_timezone_names where name = tz);
  end if;
  perform now() at time zone tz;
  return true;
exception when invalid_parameter_value then
  return false;
end
$$;
