-- Phase 5: attendee notifications. `notifications` is the transactional outbox: one row per message,
-- recipient and channel, written by the triggers below in the same transaction as the change it tells
-- about (a registration, a promotion off the waitlist, a cancelled or moved event or occurrence, a
-- paid order or a refund), so a crash can neither lose one nor invent one. The worker
-- (localplus_notifications) claims due rows, sends them and marks them sent; a row that keeps
-- failing ends `failed` (a dead letter) until an admin retries it.
--
-- Preferences (`notification_settings`) are the users' own; no row means enabled. Push subscriptions
-- are the users' own to read and remove; the server writes them (an endpoint moves to whoever
-- subscribes it last). Only the server writes the outbox.

-- Supabase keeps the user's profile (e.g. `locale`) in raw_user_meta_data; the shim's table lacks it.
do $$
begin
  if not exists (select 1 from pg_attribute where attrelid = 'auth.users'::regclass
                  and attname = 'raw_user_meta_data' and not attisdropped) then
    alter table auth.users add column raw_user_meta_data jsonb default '{}'::jsonb;
  end if;
end
$$;

create table if not exists public.notification_settings (
  user_id uuid not null references auth.users (id) on delete cascade,
  kind text not null check (kind in ('registration_confirmed', 'waitlist_promoted', 'event_cancelled',
    'event_moved', 'occurrence_cancelled', 'occurrence_moved', 'order_paid', 'refund_issued', 'event_reminder')),
  channel text not null check (channel in ('email', 'push')),
  enabled boolean not null,
  updated_at timestamptz not null default now(),
  primary key (user_id, kind, channel)
);

create table if not exists public.push_subscriptions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  endpoint text not null unique check (endpoint ~ '^https?://' and char_length(endpoint) <= 2000),
  -- The browser's keys (base64url): what the payload is encrypted to (RFC 8291).
  p256dh text not null check (char_length(p256dh) between 1 and 200),
  auth text not null check (char_length(auth) between 1 and 100),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index if not exists push_subscriptions_user_idx on public.push_subscriptions (user_id);

create table if not exists public.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  kind text not null,
  channel text not null check (channel in ('email', 'push')),
  event_id uuid references public.events (id) on delete cascade,
  occurrence_id uuid,
  order_id uuid,
  -- What the message tells beyond the rows it names (e.g. the time an event moved from).
  payload jsonb not null default '{}',
  status text not null default 'pending' check (status in ('pending', 'sent', 'failed', 'cancelled')),
  attempts integer not null default 0,
  -- When it is due: its time (a reminder), the next retry, or the end of a worker's lease on it.
  send_after timestamptz not null default now(),
  last_error text not null default '',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  sent_at timestamptz
);

create index if not exists notifications_due_idx on public.notifications (send_after) where status = 'pending';
create index if not exists notifications_status_idx on public.notifications (status, created_at, id);
create index if not exists notifications_event_idx on public.notifications (event_id, kind) where status = 'pending';

-- 24 hours before a start, on the wall clock of the event's time zone (the day before at the same
-- local time, also across a daylight-saving change).
create or replace function localplus_private.reminder_at(p_starts_at timestamptz, p_timezone text)
  returns timestamptz
  language sql stable
  set search_path = ''
  as $$ select ((p_starts_at at time zone p_timezone) - interval '1 day') at time zone p_timezone $$;

-- One message per recipient and enabled channel: email to users with an address, push to users with
-- a subscription, neither where the user turned that kind off for that channel.
create or replace function localplus_private.notify(p_kind text, p_users uuid[], p_event_id uuid,
    p_occurrence_id uuid, p_order_id uuid, p_payload jsonb, p_send_after timestamptz)
  returns integer
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_count integer;
begin
  insert into public.notifications (user_id, kind, channel, event_id, occurrence_id, order_id, payload, send_after)
  select u.id, p_kind, c.channel, p_event_id, p_occurrence_id, p_order_id, coalesce(p_payload, '{}'),
         coalesce(p_send_after, now())
    from auth.users u
    cross join (values ('email'), ('push')) c (channel)
   where u.id = any(p_users)
     and not exists (select 1 from public.notification_settings s
                      where s.user_id = u.id and s.kind = p_kind and s.channel = c.channel and not s.enabled)
     and case c.channel
           when 'email' then coalesce(u.email, '') <> ''
           else exists (select 1 from public.push_subscriptions p where p.user_id = u.id)
         end;
  get diagnostics v_count = row_count;
  if v_count > 0 then
    perform pg_notify('localplus_notifications', '');
  end if;
  return v_count;
end
$$;

-- Reminders of one registration (or of everyone's, p_user null) for an event or one occurrence of
-- it: the pending ones are cancelled and, while the start is more than a day ahead, scheduled anew.
create or replace function localplus_private.schedule_reminders(p_event_id uuid, p_occurrence_id uuid, p_user uuid)
  returns void
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_starts_at timestamptz;
  v_timezone text;
  v_status text;
  v_users uuid[];
begin
  update public.notifications set status = 'cancelled', updated_at = now()
   where event_id = p_event_id and kind = 'event_reminder' and status = 'pending'
     and occurrence_id is not distinct from p_occurrence_id and (p_user is null or user_id = p_user);
  select e.starts_at, e.timezone, e.status into v_starts_at, v_timezone, v_status
    from public.events e where e.id = p_event_id;
  if p_occurrence_id is not null then
    select o.starts_at, case when o.status = 'scheduled' then v_status else 'cancelled' end
      into v_starts_at, v_status from public.event_occurrences o where o.id = p_occurrence_id;
  end if;
  if v_status is distinct from 'published' or localplus_private.reminder_at(v_starts_at, v_timezone) <= now() then
    return;
  end if;
  select array_agg(p.user_id) into v_users from public.event_participants p
   where p.event_id = p_event_id and p.occurrence_id is not distinct from p_occurrence_id and p.status = 'going'
     and (p_user is null or p.user_id = p_user);
  if v_users is not null then
    perform localplus_private.notify('event_reminder', v_users, p_event_id, p_occurrence_id, null,
      jsonb_build_object('starts_at', v_starts_at), localplus_private.reminder_at(v_starts_at, v_timezone));
  end if;
end
$$;

-- A registration that becomes `going`: confirmed (or promoted off the waitlist), and its reminder.
-- One that stops going loses its reminder.
create or replace function localplus_private.event_participants_notify() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if tg_op = 'DELETE' then
    perform localplus_private.schedule_reminders(old.event_id, old.occurrence_id, old.user_id);
    return null;
  end if;
  if tg_op = 'UPDATE' and new.status = old.status and new.occurrence_id is not distinct from old.occurrence_id then
    return null;
  end if;
  if new.status = 'going' and (tg_op = 'INSERT' or old.status <> 'going' or old.occurrence_id is distinct from new.occurrence_id) then
    perform localplus_private.notify(
      case when tg_op = 'UPDATE' and old.status = 'waitlisted' then 'waitlist_promoted' else 'registration_confirmed' end,
      array[new.user_id], new.event_id, new.occurrence_id, null, '{}', null);
  end if;
  if tg_op = 'UPDATE' and old.status = 'going' and old.occurrence_id is distinct from new.occurrence_id then
    perform localplus_private.schedule_reminders(old.event_id, old.occurrence_id, old.user_id);
  end if;
  if new.status = 'going' or (tg_op = 'UPDATE' and old.status = 'going') then
    perform localplus_private.schedule_reminders(new.event_id, new.occurrence_id, new.user_id);
  end if;
  return null;
end
$$;

drop trigger if exists event_participants_notify on public.event_participants;
create trigger event_participants_notify after insert or update of status, occurrence_id or delete
  on public.event_participants for each row execute function localplus_private.event_participants_notify();

-- A cancelled event reaches everyone going or waitlisted (of any occurrence), once; a moved one
-- everyone registered for the event itself (its occurrences tell their own moves), and its reminders move.
create or replace function localplus_private.events_notify() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_users uuid[];
  v_occurrence uuid;
begin
  if new.status = 'cancelled' and old.status <> 'cancelled' then
    select array_agg(p.user_id) into v_users from public.event_participants p
     where p.event_id = new.id and p.status in ('going', 'waitlisted');
    if v_users is not null then
      perform localplus_private.notify('event_cancelled', v_users, new.id, null, null, '{}', null);
    end if;
    update public.notifications set status = 'cancelled', updated_at = now()
     where event_id = new.id and kind = 'event_reminder' and status = 'pending';
  elsif new.status = 'published' and (new.starts_at <> old.starts_at or new.timezone <> old.timezone) then
    if new.starts_at <> old.starts_at then
      select array_agg(p.user_id) into v_users from public.event_participants p
       where p.event_id = new.id and p.occurrence_id is null and p.status in ('going', 'waitlisted');
      if v_users is not null then
        perform localplus_private.notify('event_moved', v_users, new.id, null, null,
          jsonb_build_object('previous_starts_at', old.starts_at, 'starts_at', new.starts_at), null);
      end if;
    end if;
    perform localplus_private.schedule_reminders(new.id, null, null);
    if new.timezone <> old.timezone then
      for v_occurrence in select o.id from public.event_occurrences o where o.event_id = new.id loop
        perform localplus_private.schedule_reminders(new.id, v_occurrence, null);
      end loop;
    end if;
  elsif new.status = 'published' and old.status <> 'published' then
    -- Registrations made before publication (e.g. by editors) get their reminders now.
    perform localplus_private.schedule_reminders(new.id, null, null);
  end if;
  return null;
end
$$;

drop trigger if exists events_notify on public.events;
create trigger events_notify after update of status, starts_at, timezone on public.events
  for each row execute function localplus_private.events_notify();

create or replace function localplus_private.event_occurrences_notify() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_users uuid[];
  v_kind text;
begin
  if (select e.status from public.events e where e.id = new.event_id) is distinct from 'published' then
    return null;  -- a cancelled event has told its own news
  end if;
  if new.status = 'cancelled' and old.status <> 'cancelled' then
    v_kind := 'occurrence_cancelled';
  elsif new.status = 'scheduled' and new.starts_at <> old.starts_at then
    v_kind := 'occurrence_moved';
  else
    return null;
  end if;
  select array_agg(p.user_id) into v_users from public.event_participants p
   where p.event_id = new.event_id and p.occurrence_id = new.id and p.status in ('going', 'waitlisted');
  if v_users is not null then
    perform localplus_private.notify(v_kind, v_users, new.event_id, new.id, null,
      jsonb_build_object('previous_starts_at', old.starts_at, 'starts_at', new.starts_at), null);
  end if;
  perform localplus_private.schedule_reminders(new.event_id, new.id, null);
  return null;
end
$$;

drop trigger if exists event_occurrences_notify on public.event_occurrences;
create trigger event_occurrences_notify after update of starts_at, cancelled, in_series on public.event_occurrences
  for each row execute function localplus_private.event_occurrences_notify();

-- Ticketing already writes an outbox row when an order is paid or refunded (same transaction): the
-- buyer's messages fan out from it.
create or replace function localplus_private.outbox_notify() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_order record;
begin
  if new.topic not in ('order.paid', 'order.refunded') then
    return null;
  end if;
  select o.buyer_id, o.event_id, o.occurrence_id into v_order from public.orders o where o.id = new.aggregate_id;
  if v_order.buyer_id is not null then
    perform localplus_private.notify(
      case new.topic when 'order.paid' then 'order_paid' else 'refund_issued' end,
      array[v_order.buyer_id], v_order.event_id, v_order.occurrence_id, new.aggregate_id, new.payload, null);
  end if;
  return null;
end
$$;

drop trigger if exists outbox_notify on public.outbox;
create trigger outbox_notify after insert on public.outbox
  for each row execute function localplus_private.outbox_notify();

alter table public.notification_settings enable row level security;
alter table public.push_subscriptions enable row level security;
alter table public.notifications enable row level security;

drop policy if exists notification_settings_own on public.notification_settings;
create policy notification_settings_own on public.notification_settings for all to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));

drop policy if exists push_subscriptions_own on public.push_subscriptions;
create policy push_subscriptions_own on public.push_subscriptions for all to authenticated
  using (user_id = (select auth.uid()));

drop policy if exists notifications_read on public.notifications;
create policy notifications_read on public.notifications for select to authenticated
  using (user_id = (select auth.uid()) or localplus_private.is_platform_admin());

revoke all on public.notification_settings, public.push_subscriptions, public.notifications
  from public, anon, authenticated;
grant select, delete on public.notification_settings, public.push_subscriptions to authenticated;
grant insert (user_id, kind, channel, enabled), update (enabled) on public.notification_settings to authenticated;
grant select on public.notifications to authenticated;
grant all on public.notification_settings, public.push_subscriptions, public.notifications to service_role;

revoke all on function
  localplus_private.reminder_at(timestamptz, text),
  localplus_private.notify(text, uuid[], uuid, uuid, uuid, jsonb, timestamptz),
  localplus_private.schedule_reminders(uuid, uuid, uuid),
  localplus_private.event_participants_notify(),
  localplus_private.events_notify(),
  localplus_private.event_occurrences_notify(),
  localplus_private.outbox_notify()
  from public, anon, authenticated;
