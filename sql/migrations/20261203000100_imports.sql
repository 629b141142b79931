-- Phase 3: events scraped from elsewhere. Each scraped item (by its source and external id) is
-- recorded in `scraper_imports` with a hash of what it said; a new one becomes an event waiting for
-- review (its `source` the scraper's name), unless it looks like an event we already have: then it is
-- kept as a likely duplicate of that event, with the score, for an admin to merge, keep or reject.
-- Only the server writes here (POST /api/imports is for service_role); platform admins read it.

create table if not exists public.scraper_imports (
  id uuid primary key default gen_random_uuid(),
  source text not null check (source ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
  external_id text not null check (char_length(external_id) between 1 and 200),
  -- sha256 of the item as the importer normalised it: the same hash again is a no-op.
  content_hash text not null,
  item jsonb not null,
  -- The event this item made or updates; null while it is only a likely duplicate.
  event_id uuid references public.events (id) on delete set null,
  duplicate_of uuid references public.events (id) on delete set null,
  score real check (score between 0 and 1),
  status text not null check (status in ('created', 'duplicate', 'merged', 'kept', 'rejected')),
  decided_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint scraper_imports_external_key unique (source, external_id)
);

create index if not exists scraper_imports_queue_idx on public.scraper_imports (created_at, id) where status = 'duplicate';
create index if not exists scraper_imports_event_idx on public.scraper_imports (event_id);

alter table public.scraper_imports enable row level security;
drop policy if exists scraper_imports_read on public.scraper_imports;
create policy scraper_imports_read on public.scraper_imports for select to authenticated
  using (localplus_private.is_platform_admin());

revoke all on public.scraper_imports from public, anon, authenticated;
grant select on public.scraper_imports to authenticated;
grant all on public.scraper_imports to service_role;

-- Candidates for an item's duplicates are found by trigram similarity of lowered titles (then
-- scored finely by the importer).
create index if not exists events_title_trgm_idx on public.events using gin (lower(title) gin_trgm_ops);
