-- The cost of a sale in a rush.
--
-- NOTIFY serializes the commits of the transactions that send it: at commit Postgres takes a
-- cluster-wide heavyweight lock ("database 0", async.c PreCommit_Notify) and holds it until the
-- commit record is flushed, so every paid order (whose outbox trigger notifies the notifications
-- worker) waited for the commit and disk flush of the one before it: a hot row of its own, beside the
-- buckets. The worker drains every due message each time it wakes and polls anyway
-- (NOTIFICATIONS_POLL_SECONDS, 2 s by default), so a wake-up is only needed when it has nothing due:
-- when another transaction's message is due and unsent, the worker is awake or will be woken for that
-- one, and finds this one with it (at worst at its next poll). A quiet system notifies as before.
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
  -- (created_at < now(): made by an earlier transaction, not this one's rows.)
  if v_count > 0 and not exists (select 1 from public.notifications n
                                  where n.status = 'pending' and n.send_after <= now() and n.created_at < now()) then
    perform pg_notify('localplus_notifications', '');
  end if;
  return v_count;
end
$$;

revoke all on function localplus_private.notify(text, uuid[], uuid, uuid, uuid, jsonb, timestamptz)
  from public, anon, authenticated;
