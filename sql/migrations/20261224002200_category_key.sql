-- Category filters (search, the moderation queue, the platform's analytics) compare categories without
-- regard to case or the spaces around them: `category=Music` finds events of category `music`.
-- Searches run as the caller under row-level security, which lets only leakproof conditions be index
-- conditions; lower() and btrim() are not, so an index on lower(category) would not serve them. A stored
-- column of the folded category, compared with plain (leakproof) text equality, is indexed.
-- The expression is localplus_events.domain.folded_category's.
alter table public.events add column if not exists category_key text
  generated always as (lower(btrim(category, E' \t\n\r'))) stored;

create index if not exists events_listed_category_key_idx on public.events (category_key, starts_at, id)
  where status = 'published' and visibility = 'public';
-- Nothing compares the category as given any more.
drop index if exists public.events_listed_category_idx;
