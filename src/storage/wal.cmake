# The write-ahead log, hard state, data dir layout and the fake file layer
# used by their tests (included by src/storage/CMakeLists.txt).
add_library(kvwal STATIC
  ${CMAKE_CURRENT_LIST_DIR}/wal.c
  ${CMAKE_CURRENT_LIST_DIR}/wal_io.c
  ${CMAKE_CURRENT_LIST_DIR}/wal_scan.c
  ${CMAKE_CURRENT_LIST_DIR}/hardstate.c
  ${CMAKE_CURRENT_LIST_DIR}/datadir.c
  ${CMAKE_CURRENT_LIST_DIR}/clusterfile.c
  ${CMAKE_CURRENT_LIST_DIR}/fs_fake.c)
target_link_libraries(kvwal PUBLIC kvfs Threads::Threads)
set_target_properties(kvwal PROPERTIES POSITION_INDEPENDENT_CODE ON)
