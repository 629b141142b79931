-- A name is more than white space: an event's title, a ticket type's name and a venue's name.
--
-- The API answers 400 'title is required' / 'name is required' for "   " or "\t", but the CHECKs only
-- asked for one character, so an owner writing through Supabase's REST stored a blank event that was
-- then listed and searched like any other. Seating plans' names already had such a check.
--
-- Added NOT VALID and then validated: a database holding such rows from before keeps them (with a
-- warning) and checks every write from now on.

do $$
declare
  v_check record;
begin
  for v_check in
    select * from (values
      ('public.events'::regclass, 'events_title_not_blank', 'title'),
      ('public.ticket_types'::regclass, 'ticket_types_name_not_blank', 'name'),
      ('public.venues'::regclass, 'venues_name_not_blank', 'name')
    ) as c (table_name, constraint_name, column_name)
  loop
    if not exists (select 1 from pg_catalog.pg_constraint
                    where conrelid = v_check.table_name and conname = v_check.constraint_name) then
      execute format('alter table %s add constraint %I check (%I ~ %L) not valid', v_check.table_name,
                     v_check.constraint_name, v_check.column_name, '[^[:space:]]');
    end if;
    begin
      execute format('alter table %s validate constraint %I', v_check.table_name, v_check.constraint_name);
    exception when check_violation then
      raise warning '% has a blank %; new writes are checked, old rows stay until renamed',
        v_check.table_name, v_check.column_name;
    end;
  end loop;
end
$$;
