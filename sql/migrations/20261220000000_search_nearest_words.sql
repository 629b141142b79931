-- Search at a million events: near me nearest first, and several words found together.

-- Near me reads the events in the area nearest first (`<->` on the point) instead of all of them. The
-- area is tested as plain comparisons of latitude and longitude, which row-level security lets be
-- index conditions (they are leakproof; `<@` is not), so they are in the index beside the point
-- (btree_gist). The point's own index was used only by the candidates' area-only search, gone below.
create index if not exists events_listed_near_idx on public.events
  using gist (point(longitude, latitude), latitude, longitude)
  where status = 'published' and visibility = 'public' and latitude is not null;
drop index if exists public.events_listed_geo_idx;

-- The trigram indexes without a predicate: Postgres never ANDs two partial indexes with the same
-- predicate (the second looks redundant), so with them a search of two words read every event that
-- matched one word to check the other. Now the words' matches are intersected in the index first.
drop index if exists public.events_search_text_trgm_idx;
drop index if exists public.events_search_keywords_trgm_idx;
create index if not exists events_search_text_trgm_idx on public.events using gin (search_text gin_trgm_ops);
create index if not exists events_search_keywords_trgm_idx on public.events using gin (search_keywords gin_trgm_ops);

-- Search candidates now always have words: the area alone is searched by the caller (see above).
create or replace function localplus_private.listed_event_candidates(p_words text[], p_patterns text[], p_box box,
                                                                     p_threshold real)
  returns setof uuid
  language plpgsql stable security definer
  -- pg_trgm lives in `extensions` on Supabase and in `public` on a plain Postgres.
  set search_path = pg_catalog, public, extensions
  as $$
declare
  v_words text := '';
begin
  if coalesce(array_length(p_words, 1), 0) = 0 then
    raise exception 'listed_event_candidates needs words';
  end if;
  perform set_config('pg_trgm.word_similarity_threshold', p_threshold::text, true);
  for i in 1 .. array_length(p_words, 1) loop
    -- LIKE first: it is much cheaper to check than word similarity, and usually decides.
    v_words := v_words || format(' and (e.search_text like $3[%s] or e.search_keywords %%> $1[%s])', i, i);
  end loop;
  -- Text first, then the area: Postgres cannot estimate `<@ box` and would otherwise scan the
  -- whole area and test the (costly) trigram match on every event in it.
  return query execute
    'with matches as materialized ('
    || ' select e.id, e.latitude, e.longitude from public.events e'
    || ' where e.status = ''published'' and e.visibility = ''public''' || v_words || ')'
    || ' select id from matches'
    || ' where $2 is null or (latitude is not null and point(longitude, latitude) <@ $2)'
    using p_words, p_box, p_patterns;
end
$$;
