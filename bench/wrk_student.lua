-- wrk script for bench/service.py: wrk_recommend.lua (bodies, key, WRK_JSON summary) sent to the
-- path in WRK_PATH instead of the teacher's /v1/recommend, e.g. /v1/students/ID/recommend.
--
--   WRK_BODIES=bodies.jsonl WRK_API_KEY=... WRK_PATH=/v1/students/ID/recommend \
--     wrk -t2 -c32 -d20s -s bench/wrk_student.lua URL

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_recommend.lua")

local recommend_init = init

function init(args)
  recommend_init(args)
  local path = os.getenv("WRK_PATH")
  if path == nil then
    error("set WRK_PATH")
  end
  wrk.path = path
end
