# Tests of the state machine and snapshots (src/storage/sm.cmake).
add_library(kvsmtest STATIC ${CMAKE_CURRENT_LIST_DIR}/test_sm_util.c)
target_link_libraries(kvsmtest PUBLIC kvsm PkgConfig::CHECK)
kv_unit_test(test_sm SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sm.c LIBS kvsmtest kvsm)
# kvwal for the fake file layer (fs_fake.h): receiving into it.
kv_unit_test(test_snap SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_snap.c LIBS kvsmtest kvsm kvwal)
kv_unit_test(test_sm_random SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sm_random.c LIBS kvsmtest kvsm)
kv_unit_test(test_sm_kcache SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sm_kcache.c LIBS kvsmtest kvsm)
kv_unit_test(test_sm_sessions SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sm_sessions.c LIBS kvsmtest kvsm)
kv_unit_test(test_sm_history SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sm_history.c LIBS kvsmtest kvsm)
kv_unit_test(test_sm_txn SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sm_txn.c LIBS kvsmtest kvsm)
kv_unit_test(test_sm_lease SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sm_lease.c LIBS kvsmtest kvsm)
