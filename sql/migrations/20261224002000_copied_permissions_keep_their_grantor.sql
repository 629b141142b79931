-- Permissions the server copies keep who granted them.
--
-- A "this and following" split copies the event's permissions to the new series as the server
-- (service_role, no user in the request), giving each copy the granted_by of the grant it copies; the
-- trigger replaced that with auth.uid(), null for the server, so every copy said nobody granted it.
-- Now a row inserted by the server's own role without a user keeps the granted_by it is given. Any
-- request with a user (or as anon/authenticated) is still recorded as granted by its caller, so a
-- caller through Supabase's REST cannot name someone else, even where a table grant lets the column
-- through; updates still record the caller (null for the server) as before.
-- The trigger is the one of 20261224001701 with that exception added.

create or replace function localplus_private.event_permissions_before_write() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if tg_op = 'UPDATE' then
    new.event_id := old.event_id;
    new.user_id := old.user_id;
  end if;
  if localplus_private.in_request() then
    new.created_at := case when tg_op = 'INSERT' then now() else old.created_at end;
    if not (
      tg_op = 'INSERT' and current_setting('role') = 'service_role' and (select auth.uid()) is null
    ) then
      new.granted_by := (select auth.uid());
    end if;
    if new.expires_at <= now() and (tg_op = 'INSERT' or new.expires_at is distinct from old.expires_at) then
      raise exception 'expires_at must be in the future'
        using errcode = 'check_violation', column = 'expires_at', hint = 'INVALID_ARGUMENT';
    end if;
  end if;
  return new;
end
$$;
