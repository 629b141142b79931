-- Phase 0 of ticketing: the kinds of ticket on sale for an event. Orders arrive in Phase 2.

create table if not exists public.ticket_types (
  id uuid primary key default gen_random_uuid(),
  event_id uuid not null references public.events (id) on delete cascade,
  occurrence_id uuid,
  name text not null check (char_length(name) between 1 and 100),
  description text not null default '' check (char_length(description) <= 2000),
  price_minor bigint not null default 0 check (price_minor between 0 and 100000000000),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  inventory integer not null check (inventory between 0 and 1000000),
  sold integer not null default 0,
  min_per_order integer not null default 1 check (min_per_order >= 1),
  max_per_order integer not null default 10,
  sales_starts_at timestamptz,
  sales_ends_at timestamptz,
  hidden boolean not null default false,
  sort_order integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint ticket_types_sold_within_inventory check (sold between 0 and inventory),
  constraint ticket_types_max_per_order check (max_per_order between min_per_order and 100),
  constraint ticket_types_sales_window check (sales_ends_at > sales_starts_at)
);

create index if not exists ticket_types_event_id_idx on public.ticket_types (event_id, sort_order);

alter table public.ticket_types enable row level security;

-- Visible with the event itself (the subquery runs under the caller's events policy);
-- hidden ticket types only for the event's editors.
drop policy if exists ticket_types_read on public.ticket_types;
create policy ticket_types_read on public.ticket_types for select to anon, authenticated
  using ((not hidden and exists (select 1 from public.events e where e.id = event_id))
         or public.event_role_rank(event_id) >= 3);

drop policy if exists ticket_types_manage on public.ticket_types;
create policy ticket_types_manage on public.ticket_types for all to authenticated
  using (public.event_role_rank(event_id) >= 3)
  with check (public.event_role_rank(event_id) >= 3);

grant select on public.ticket_types to anon, authenticated;
grant insert, update, delete on public.ticket_types to authenticated;
grant all on public.ticket_types to service_role;
