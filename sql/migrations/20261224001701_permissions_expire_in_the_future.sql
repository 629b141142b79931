-- A permission granted, or given a new expiry, through a request expires in the future.
--
-- The API refused an expires_at that was not in the future (400), but an owner could insert one, or
-- move an existing grant's expiry into the past, through Supabase's REST. Refused now on insert and
-- whenever expires_at changes; rows that expired since are left as they are (changing their role
-- still works), and so are trusted backend connections (migrations, restores).
-- The trigger is the one of 20261201000000 with that check added.

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
    new.granted_by := (select auth.uid());
    if new.expires_at <= now() and (tg_op = 'INSERT' or new.expires_at is distinct from old.expires_at) then
      raise exception 'expires_at must be in the future'
        using errcode = 'check_violation', column = 'expires_at', hint = 'INVALID_ARGUMENT';
    end if;
  end if;
  return new;
end
$$;
